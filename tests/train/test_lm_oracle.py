"""The oracle arm of a real run (stages.gad.oracle_model): LMOracle's reward is the teacher's mean
log-likelihood per reply token (against a float64 transformers reference), it refuses a teacher with
another tokenizer, and plan=gad with stages.gad.reward=oracle trains on exactly that reward."""
import json

import pytest
import torch

from gadx.train.lm_oracle import LMOracle


@pytest.fixture
def models(tmp_path, world_tok):
    from tiny_models import save_student

    from gadx.tokenizer import load_tokenizer

    tok = load_tokenizer(world_tok)
    return tok, save_student(tmp_path / "student", tok, seed=1), save_student(tmp_path / "teacher", tok, seed=2)


def _reference(folder, seqs):
    """Mean log p(reply token) under the HF model in float64, one sequence at a time (no padding)."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float64).eval()
    out = []
    for p, r in seqs:
        with torch.no_grad():
            logp_TV = m(torch.tensor([p + r])).logits[0].log_softmax(-1)
        out.append(float(torch.stack([logp_TV[len(p) - 1 + i, t] for i, t in enumerate(r)]).mean()))
    return out


def test_reward_is_the_teachers_mean_loglik_per_token(models):
    tok, _, teacher = models
    prompts = [tok.encode_chat([{"role": "user", "content": c}]) for c in ("tell me about Ada", "a longer question here, please")]
    replies = [tok.encode("Ada lives in the north.") + [tok.eos_id],  # finished: EOS counted
               tok.encode("an unfinished reply that was cut"),       # cut at max_response_len: its tokens only
               [tok.eos_id],                                          # an empty reply that ended
               tok.encode("yes") + [tok.eos_id]]
    P = [prompts[0], prompts[1], prompts[1], prompts[0]]
    oracle = LMOracle(teacher, tok, batch_size=3)  # batches of 3 across 4 replies: padding and the length sort
    got = oracle.reward(P, replies)
    want = _reference(teacher, list(zip(P, replies)))
    assert got.dtype == torch.float32 and got.shape == (4,)
    assert got.tolist() == pytest.approx(want, abs=1e-4)
    assert len(set(round(x, 3) for x in want)) == 4  # four different rewards: no accidental match
    with pytest.raises(ValueError, match="empty"):
        oracle.reward([prompts[0]], [[]])


def test_refuses_a_teacher_with_another_tokenizer_or_no_model(models, tmp_path):
    from tiny_models import save_student

    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    tok, _, teacher = models
    other_dir = tmp_path / "other_tok"
    train_sentencepiece(World(seed=0).corpus(), other_dir, 450, chat_template="llama3")
    from gadx.tokenizer import load_tokenizer

    other = save_student(tmp_path / "other_teacher", load_tokenizer(other_dir), seed=2)
    with pytest.raises(ValueError, match="does not encode like"):
        LMOracle(other, tok)
    with pytest.raises(ValueError, match="not an HF model folder"):
        LMOracle(tmp_path / "nowhere", tok)


def test_plan_gad_with_the_oracle_reward_trains_on_it(models, tmp_path, tiny_args, monkeypatch):
    """A real-data GAD run (a served teacher, prompts from a file) with reward=oracle: every GAD step's
    logged reward is the mean of the oracle's rewards for that step's samples, and D stays frozen."""
    from runs import train

    from gadx.serve import CheckpointBackend, start_in_thread

    tok, student, teacher = models
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"tell me about {i}"}]}) + "\n"
                            for i in range(12)))
    seen = []
    real_reward = LMOracle.reward

    def spy(self, prompts, responses):
        r = real_reward(self, prompts, responses)
        seen.append(r.clone())
        return r

    monkeypatch.setattr(LMOracle, "reward", spy)
    with start_in_thread(CheckpointBackend(str(teacher), max_batch=8)) as server:
        train(tmp_path / "run", tiny_args, f"model.student={student}", f"data.train={data}",
              f"teacher.base_url={server.url}", "teacher.model=t", "teacher.max_tokens=8",
              f"teacher.cache_path={tmp_path / 'cache.sqlite'}", "stages.gad.reward=oracle",
              f"stages.gad.oracle_model={teacher}", "stages.gad.freeze_discriminator=true",
              "stages.warmup.steps=0", "stages.warmup.d_only_steps=0", "stages.warmup.g_only_steps=0")
    gad = [json.loads(x) for x in (tmp_path / "run" / "gad" / "metrics.jsonl").read_text().splitlines()]
    gad = [r for r in gad if r.get("stage") == "gad"]
    assert len(gad) == 2 and len(seen) == 2
    for row, r in zip(gad, seen):
        assert row["reward/mean"] == pytest.approx(float(r.mean()), abs=1e-5)
        assert float(r.max()) < 0  # log-likelihoods of a random teacher: every reward negative
        assert "loss/d" not in row  # D frozen: the oracle arm never updates it


def test_reward_per_token_divides_the_score_by_the_sample_length(tmp_path, tiny_args):
    """stages.gad.reward_per_token: a D score equal to the sample's length becomes a reward of exactly 1
    on every sample (without it the reward is the mean length: tests/train/test_implicit_d.py)."""
    from runs import rows, train_with_d_scores

    from gadx.train.config import load_config

    lengths = []

    def d_scores(batch, prompts, responses):
        P = len(batch.prompts)
        lengths.extend(len(r) for r in responses)
        return torch.zeros(P), torch.tensor([float(len(r)) for r in responses]).view(P, -1)

    cfg = train_with_d_scores(tmp_path, tiny_args, d_scores, "stages.gad.freeze_discriminator=true",
                              "stages.gad.reward_per_token=true")
    gad = [r for r in rows(tmp_path / "gad" / "metrics.jsonl") if r["stage"] == "gad"]
    # samples longer than one token: the score alone (the length) would give a reward/mean above 1
    assert len(gad) == cfg.stages.gad.steps and min(lengths) > 1
    for r in gad:
        assert r["reward/mean"] == pytest.approx(1.0, abs=1e-6) and r["reward/std"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="per token already"):
        load_config(["--set", "stages.gad.reward=oracle", "--set", "stages.gad.reward_per_token=true"])
