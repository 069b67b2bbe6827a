"""The verdict's evaluation pieces (gadx/train/verdict.py, gadx/train/evaluate.py) on hand-made numbers:
the paired bootstrap, the best-temperature choice, scoring against the world's exact teacher, the
plain-PyTorch student log-likelihood behind KL(teacher || student), and the results table."""
import math
import random

import pytest
import torch

from gadx.train import verdict as vd


def test_paired_bootstrap_is_b_minus_a_with_an_interval_around_it():
    mean, lo, hi = vd.paired_bootstrap([0.0] * 4, [1.0] * 4)
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)  # no spread: the interval is the point
    a = [0.0] * 40
    b = [1.0] * 20 + [0.0] * 20  # b wins on half the prompts
    mean, lo, hi = vd.paired_bootstrap(a, b, n_boot=4000, seed=3)
    assert mean == 0.5
    # the bootstrap se of a mean of 40 Bernoulli(0.5) is ~0.079: the 95% interval ~ 0.5 -+ 0.155
    assert 0.30 < lo < 0.40 and 0.60 < hi < 0.70, (lo, hi)
    m2, lo2, hi2 = vd.paired_bootstrap(b, a, n_boot=4000, seed=3)
    assert (m2, lo2, hi2) == (-0.5, -hi, -lo)  # the same resamples, the sign flipped
    with pytest.raises(ValueError, match="equal"):
        vd.paired_bootstrap([1.0], [1.0, 2.0])


def test_best_temperature_takes_the_highest_validity_and_the_first_on_a_tie():
    sp = {"1.0": {"valid": 0.3}, "0.8": {"valid": 0.4}, "0.6": {"valid": 0.5}, "0.0": {"valid": 0.45}}
    assert vd.best_temperature(sp) == 0.6
    sp["0.0"]["valid"] = 0.6
    assert vd.best_temperature(sp) == 0.0
    sp["1.0"]["valid"] = 0.6  # tie between T=1 and greedy: the first of TEMPS
    assert vd.best_temperature(sp) == 1.0
    assert vd.best_temperature({"1.0": {"x": 2}, "0.8": {"x": 1}, "0.6": {"x": 0}, "0.0": {"x": 3}}, "x") == 0.0


def test_score_samples_reads_the_exact_teacher():
    from gadx.world import World

    world = World(seed=0)
    prompts = [ex.prompt for ex in world.split("test_id")[:3]]
    rng = random.Random(0)
    good = [world.teacher.sample(p, rng) for p in prompts]
    texts = [good[0], good[0] + " and more", good[1], "nonsense", good[2], good[2]]  # 2 samples per prompt
    m = vd.score_samples(world, prompts, texts, [10] * 6, [True, True, True, True, True, False], 2)
    # valid: the teacher's own replies, finished; an edited reply, nonsense and an unfinished one are not
    assert m["per_prompt_valid"] == [0.5, 0.5, 0.5]
    assert m["valid"] == 0.5
    lt = world.teacher.logprob(prompts[0], good[0])
    assert math.isfinite(lt)
    assert m["per_prompt_logT_tok"][0] == pytest.approx((max(lt / 10, vd.FLOOR) + vd.FLOOR) / 2)
    assert m["per_prompt_task"][0] == 1.0 or world.teacher.is_correct(prompts[0], good[0]) is False


def test_student_logprobs_match_transformers():
    """KL(teacher || student) rests on this forward: it must equal an independent Qwen2 implementation."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from gadx.models.config import ModelConfig

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      max_position_embeddings=64, initializer_range=0.3)).eval()
    mc = ModelConfig.from_hf_dict(hf.config.to_dict())
    sd = {k: v for k, v in hf.state_dict().items()}
    prompts = [[1, 5, 9, 13], [2, 3]]
    responses = [[7, 7, 8], [40, 41, 42, 43, 44]]
    got = vd.student_logprobs(sd, mc, prompts, responses)
    with torch.no_grad():
        for p, r, g in zip(prompts, responses, got):
            ids = torch.tensor([p + r])
            logp = torch.log_softmax(hf(ids).logits[0, len(p) - 1:-1].float(), -1)
            want = float(logp.gather(1, torch.tensor(r)[:, None]).sum())
            assert g == pytest.approx(want, abs=1e-4)


def _ev(valid_by_t: dict[float, list[float]], best: float, kl: float = 0.5) -> dict:
    sp = {}
    for t, pp in valid_by_t.items():
        sp[str(t)] = {"valid": sum(pp) / len(pp), "task": 0.25, "logT_tok": -3.0, "len": 20.0, "per_prompt_valid": pp}
    split = {**sp, "kl_ts": kl}
    return {"test": {"test_id": split, "test_ood": split}, "val": None, "best_T": {"test_id": best, "test_ood": best},
            "best_T_on": "validation"}


def test_results_table_renders_every_row_and_the_paired_signs():
    from gadx.train.evaluate import format_results

    T = (1.0, 0.8, 0.6, 0.0)
    seqkd = {t: [0.0, 1.0, 0.0, 1.0] for t in T}
    better = {t: [1.0, 1.0, 0.0, 1.0] for t in T}
    worse = {t: [0.0, 0.0, 0.0, 1.0] for t in T}
    per_seed = []
    for seed, gad in ((0, better), (1, worse)):
        rows = {"before": _ev({t: [0.0] * 4 for t in T}, 1.0, kl=5.0), "seqkd": _ev(seqkd, 0.6),
                "gad": _ev(gad, 0.0), "oracle": _ev(better, 0.0), "teacher": _ev({t: [1.0] * 4 for t in T}, 1.0, 0.0)}
        per_seed.append({"seed": seed, "rows": rows})
    summaries = [{"seed": s, "run": r, "step_s": x, "gad_skipped": False, "d_acc_heldout_end": 0.7}
                 for s in (0, 1) for r, x in (("warmup", None), ("seqkd", 0.5), ("gad", 5.0), ("oracle", 4.0))]
    text = format_results(per_seed, summaries)
    lines = text.splitlines()
    main = lines[:lines.index("")]  # the main table, then its note, the paired table, compute and gate lines
    labels = [ln.split("|")[1].strip() for ln in main if ln.startswith("| ") and ln.split("|")[2].strip() == "ID"]
    assert labels[:3] == ["before", "SeqKD (best T: T=0.6/T=0.6)", "GAD"]
    assert labels[-1] == "teacher" and "oracle" in labels[3] and len(labels) == 5
    gad_id = next(ln for ln in lines if ln.startswith("| GAD | ID |") and "seeds > 0" not in ln and "[" in ln)
    # seed 0: +0.25 (one more valid prompt of 4), seed 1: -0.25; mean 0; 1 of 2 seeds above SeqKD
    assert "+0.250 [" in gad_id and "-0.250 [" in gad_id and "| +0.000 | 1 of 2 |" in gad_id
    oracle_ood = next(ln for ln in lines if ln.startswith("| oracle") and "| OOD |" in ln and "[" in ln)
    assert "2 of 2" in oracle_ood
    assert "GAD 5.00 s (x10.0)" in text and "GAD skipped by the gate: 0 of 2" in text
    assert "held-out validation prompts" in text


def test_an_arm_skipped_on_one_seed_keeps_its_row_and_says_so():
    from gadx.train.evaluate import format_results

    T = (1.0, 0.8, 0.6, 0.0)
    rows = {"seqkd": _ev({t: [0.0, 1.0] for t in T}, 0.0), "gad": _ev({t: [1.0, 1.0] for t in T}, 0.0)}
    per_seed = [{"seed": 0, "rows": dict(rows)}, {"seed": 1, "rows": {"seqkd": rows["seqkd"]}}]
    text = format_results(per_seed, [])
    assert "| GAD (1 of 2 seeds) | ID | 1.000 |" in text
    assert "| GAD | ID | +0.500 [+0.000, +1.000] | skipped | +0.500 | 1 of 2 |" in text
