"""Golden GAD steps whose policy ratio is off 1, so the policy loss and its gradient are tested.

test_golden.py's GAD rows have ratio == 1 (one update per rollout: old == current log-probs), so
their loss/g_pg is -mean(A) ~ 0 and passes under any sign. Here each GAD step makes two policy
updates on the same rollouts (stages.gad.policy_epochs=2, a larger lr): the second sees a ratio
off 1, a nonzero loss and clipping. Values are compared with relative tolerances; the ratio as
ratio - 1. The golden file must itself be non-trivial (checked below), and a flipped advantage
sign fails the comparison (test_flipped_advantage_sign_fails).

Why a sign flip is subtle: the PG loss is linear in A, and flipping A also flips the first
update (Adam's first step is ~ -lr * sign(grad)), so the second update's loss and grad norm
agree with the unflipped run to first order. Measured: loss/g_pg -0.11124 vs golden -0.11071
(0.5%, 50x the tolerance), grad_norm/g 3% off, ratio - 1 11% off, and the next step's rows
(sampled by the moved policy) differ more. Keep REL tight.

Regenerate (only after an intended numerical change, and say so in the commit):
    GADX_REGEN_GOLDEN=1 python -m pytest tests/train/test_golden_ratio.py
"""
import json
import os
from pathlib import Path

import pytest

from runs import rows, train

GOLDEN = Path(__file__).with_name("golden_ratio.json")
ARGS = ("stages.gad.policy_epochs=2", "stages.gad.lr=0.005", "stages.grad_clip=1.0",
        "stages.warmup.steps=2", "stages.warmup.g_only_steps=1", "stages.warmup.d_only_steps=1")
KEYS = ("loss/g_pg", "grad_norm/g", "ratio", "clip_frac", "kl", "entropy", "loss/d")
REL = 1e-4


def gad_rows(tmp_path, tiny_args):
    train(tmp_path, tiny_args, *ARGS)
    return [{"step": r["step"], **{k: r[k] for k in KEYS}} for r in rows(tmp_path / "gad" / "metrics.jsonl")
            if r["stage"] == "gad"]


def mismatches(got: list[dict], want: list[dict]) -> list[str]:
    out = [] if len(got) == len(want) else [f"{len(got)} GAD rows, golden has {len(want)}"]
    for g, w in zip(got, want):
        for k in KEYS:
            a, b = (g[k] - 1.0, w[k] - 1.0) if k == "ratio" else (g[k], w[k])
            if a != pytest.approx(b, rel=REL, abs=1e-9):
                out.append(f"step {w['step']} {k}: got {g[k]!r}, golden {w[k]!r}")
    return out


def test_golden_is_not_trivial():
    want = json.loads(GOLDEN.read_text())
    assert len(want) == 2
    for w in want:
        assert abs(w["ratio"] - 1.0) > 1e-3 and abs(w["loss/g_pg"]) > 1e-3 and w["grad_norm/g"] > 1e-2, w
    assert any(w["clip_frac"] > 0 for w in want), want


def test_golden_policy_ratio(tmp_path, tiny_args):
    got = gad_rows(tmp_path, tiny_args)
    if os.environ.get("GADX_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    bad = mismatches(got, json.loads(GOLDEN.read_text()))
    assert not bad, "\n".join(bad)


def test_flipped_advantage_sign_fails(tmp_path, tiny_args, monkeypatch):
    """The golden rows can fail: the same run with every advantage negated misses them."""
    from gadx.train import step

    flip = step.group_advantages
    monkeypatch.setattr(step, "group_advantages", lambda r, **kw: -flip(r, **kw))
    bad = mismatches(gad_rows(tmp_path, tiny_args), json.loads(GOLDEN.read_text()))
    assert any("loss/g_pg" in b for b in bad) and any("grad_norm/g" in b for b in bad), bad


def test_policy_epochs_must_be_positive(tmp_path, tiny_args):
    from gadx.train.config import load_config

    with pytest.raises(ValueError, match="policy_epochs must be >= 1, got 0"):
        load_config(tiny_args(tmp_path, "stages.gad.policy_epochs=0"))
