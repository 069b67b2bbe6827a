"""Tiny deterministic runs of the trainer: resume equality, order of operations, stage transitions, golden losses.

Regenerate the golden file (only after an intended numerical change, and say so in the commit):
    GADX_REGEN_GOLDEN=1 python -m pytest tests/train/test_runs.py -k golden
"""
import json
import os
from pathlib import Path

import pytest

from gadx.train.config import load_config

GOLDEN = Path(__file__).with_name("golden_losses.json")
VOLATILE = ("time", "tokens_per_s", "teacher/cost_usd")


def _rows(path):
    rows = [json.loads(l) for l in Path(path).read_text().splitlines()]
    return [{k: v for k, v in r.items() if not (k in VOLATILE or k.startswith("time/"))} for r in rows]


def _train(tmp_path, tiny_args, *extra, plan="gad", recorder=None):
    from gadx.train.setup import Env
    from gadx.train.trainer import Run

    cfg, _ = load_config(tiny_args(tmp_path, f"run.plan={plan}", *extra))
    env = Env(cfg)
    try:
        return Run(cfg, env, name=plan, out_dir=tmp_path / plan, recorder=recorder).train()
    finally:
        env.close()


@pytest.mark.slow  # two tiny runs, ~50 s
def test_resume_equals_uninterrupted(tmp_path, char_tok, tiny_args):
    _train(tmp_path / "a", tiny_args)
    _train(tmp_path / "b", tiny_args, "run.checkpoint_every=1", "run.max_steps=4")
    assert len(_rows(tmp_path / "b" / "gad" / "metrics.jsonl")) == 4
    _train(tmp_path / "b", tiny_args, "run.checkpoint_every=1")
    assert _rows(tmp_path / "b" / "gad" / "metrics.jsonl") == _rows(tmp_path / "a" / "gad" / "metrics.jsonl")


def test_gad_step_order_and_stage_transitions(tmp_path, char_tok, tiny_args):
    rec = []
    _train(tmp_path, tiny_args, recorder=rec)
    rows = _rows(tmp_path / "gad" / "metrics.jsonl")
    assert [r["stage"] for r in rows] == ["warmup"] * 3 + ["gad"] * 2
    # from-scratch student: G-only SFT for warmup.steps - d_only_steps, then D alone
    assert rec[:3] == ["g_sft_update", "g_sft_update", "sample"]
    gad_ops = ["sample", "old_logprobs", "ref_logprobs", "d_score", "advantages", "d_update", "g_update"]
    tail = [op for op in rec if op in gad_ops][-2 * len(gad_ops):]
    assert tail == gad_ops * 2


def test_gate_skips_gad_when_discriminator_stays_at_chance(tmp_path, char_tok, tiny_args, capsys, monkeypatch):
    from gadx.train.trainer import Run

    monkeypatch.setattr(Run, "heldout_acc", lambda self, ctx, step: 0.5)  # a D stuck at chance
    s = _train(tmp_path, tiny_args, "stages.gad.d_acc_gate=0.65", "stages.gad.d_gate_steps=1")
    assert s["gad_skipped"]
    rows = _rows(tmp_path / "gad" / "metrics.jsonl")
    assert [r["stage"] for r in rows] == ["warmup"] * 3 + ["gate"]
    assert "skipping the GAD stage" in capsys.readouterr().err


def test_golden_losses(tmp_path, char_tok, tiny_args):
    _train(tmp_path, tiny_args)
    rows = _rows(tmp_path / "gad" / "metrics.jsonl")
    got = [{k: r[k] for k in ("step", "stage", "loss/g_ce", "loss/d", "loss/g_pg", "kl") if k in r} for r in rows]
    if os.environ.get("GADX_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert [g["stage"] for g in got] == [w["stage"] for w in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            if isinstance(g[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (g["step"], k)
