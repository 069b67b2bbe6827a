"""The real-LLM pipeline pieces: teacher serving over the OpenAI API, the prompt split, the evaluation.

    pytest -m real tests/real/test_real_pipeline.py     # ~1-2 min (weights load a few times)
The split tests need no weights and run in CI.
"""
import json

import pytest

from gadx.real.data import SELFINST_SIZE, selfinst_split, write_prompt_files


def test_split_is_deterministic_disjoint_and_complete():
    train, held = selfinst_split(200, seed=0)
    again_train, again_held = selfinst_split(200, seed=0)
    assert [p.id for p in train] == [p.id for p in again_train] and [p.id for p in held] == [p.id for p in again_held]
    ids_t, ids_h = {p.id for p in train}, {p.id for p in held}
    assert len(ids_t) == 200 and len(ids_h) == SELFINST_SIZE - 200 and not ids_t & ids_h
    assert {p.id for p in selfinst_split(200, seed=1)[1]} != ids_h
    with pytest.raises(ValueError, match="n_train=252"):
        selfinst_split(252)


class _CharTok:
    """A stand-in tokenizer: one token per character of the user turn."""

    def encode_chat(self, messages, add_generation_prompt=True):
        return list(messages[-1]["content"])


def test_prompt_files_drop_only_overlong_training_prompts(tmp_path):
    files = write_prompt_files(tmp_path, tokenizer=_CharTok(), max_prompt_len=120, n_train=200, seed=0)
    rows = {k: [json.loads(x) for x in p.read_text().splitlines()] for k, p in files.items()}
    split = json.loads((tmp_path / "split.json").read_text())
    train, held = selfinst_split(200, seed=0)
    assert [r["id"] for r in rows["train"]] == [p.id for p in train if len(p.messages[-1]["content"]) <= 120]
    assert len(rows["train"]) + len(split["dropped_too_long"]) == 200 and split["dropped_too_long"]
    assert [r["id"] for r in rows["heldout_id"]] == [p.id for p in held]  # evaluation keeps every prompt
    assert len(rows["ood_vicuna"]) == 80 and len(rows["ood_mtbench"]) == 80
    assert rows["train"][0]["messages"][-1]["role"] == "user"


def test_recipes_load_and_give_both_arms_the_same_budget():
    """recipes/smollm2_*.toml (what tools/real_run.sh runs) are valid trainer configs: the heal is
    SFT, and SeqKD gets as many student updates as warmup + GAD."""
    from pathlib import Path

    from gadx.train.config import load_config

    recipes = Path(__file__).resolve().parents[2] / "recipes"

    def cfg(name):
        return load_config(["--config", str(recipes / "smollm2_common.toml"), "--config", str(recipes / name)])[0]

    heal, gad, seqkd = cfg("smollm2_heal.toml"), cfg("smollm2_gad.toml"), cfg("smollm2_seqkd.toml")
    assert heal.run.plan == "seqkd" and heal.seqkd_steps == 120 and heal.stages.sft_lr_schedule == "cosine"
    assert gad.run.plan == "gad" and seqkd.run.plan == "seqkd"
    w = gad.stages.warmup
    assert seqkd.seqkd_steps == (w.steps - w.d_only_steps) + gad.stages.gad.steps == 30  # issue 20: >= 30 updates an arm


@pytest.mark.real
def test_served_teacher_answers_through_the_openai_sdk(teacher_dir):
    openai = pytest.importorskip("openai")
    from gadx.serve import CheckpointBackend, start_in_thread

    with start_in_thread(CheckpointBackend(str(teacher_dir), max_batch=4)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        r = client.chat.completions.create(model="teacher", temperature=0.0, max_tokens=16,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.choices[0].message.content
    assert r.usage.completion_tokens <= 16


@pytest.mark.real
@pytest.mark.timeout(1800)  # ~1-2 min on an idle 2-core CPU; the session fixture converts the GGUF first
def test_evaluation_on_two_prompts(teacher_dir, student_dir, tmp_path):
    from gadx.real.evaluate import TEACHER, evaluate

    write_prompt_files(tmp_path / "data")
    res = evaluate({"before": student_dir}, teacher=teacher_dir, data_dir=tmp_path / "data", out_dir=tmp_path / "eval",
                   limit=2, max_new_tokens=8)
    m = res["metrics"]
    assert set(m) == {"before", TEACHER} and res["sets"] == {"heldout_id": 2, "ood_vicuna": 2, "ood_mtbench": 2}
    for s in res["sets"]:
        # the teacher's own greedy answers are its most likely ones: higher log-lik than the pruned student's
        assert m[TEACHER][s]["teacher_ll_per_token"] > m["before"][s]["teacher_ll_per_token"]
        assert m[TEACHER][s]["rougeL_vs_teacher"] == pytest.approx(100.0)
        assert all(r["n_tokens"] <= 8 for r in res["records"]["before"][s])
        assert m["before"][s]["teacher_ll_per_token"] < 0
    for f in ("results.md", "results.json", "bars.png"):
        assert (tmp_path / "eval" / f).stat().st_size > 0
    assert "| before |" in (tmp_path / "eval" / "results.md").read_text()
