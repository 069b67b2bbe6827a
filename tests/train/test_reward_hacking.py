"""A frozen discriminator gets reward-hacked; the online one does not (the paper's Figure 6, small).

One warmup (G learns to talk, then D learns to tell its samples from the teacher's
replies) is saved as HF folders; two GAD runs start from it with the same seed and
data, differing only in ``stages.gad.freeze_discriminator``. The G lr is well above
the default so that GRPO finds what the frozen D over-rewards within 30 steps.

The signature, read from each step's ``d_acc/train`` (D's pairwise accuracy on the
batch's (teacher reply, student samples) before its update) and ``reward/mean``:
with the frozen D the student's samples come to outscore the teacher's replies
(accuracy far below chance) while its reward climbs; with the online D the
accuracy stays near or above chance. Length and KL drift in both runs at this lr
(the samples reach max_response_len either way), so they are not asserted.

Measured with these settings (mean over the last 8 of 30 steps; reward rise = that
mean minus the mean of the first 3 steps), frozen | online:
    seed  d_acc/train     frozen reward rise
    0     0.008 | 0.492   +1.00
    1     0.043 | 0.922   +2.28
    2     0.000 | 0.836   +2.74
    3     0.164 | 0.570   +0.92
    4     0.008 | 0.691   +1.30
    5     0.000 | 0.867   +2.35
The bounds below hold for every one of them. That table predates two trainer changes (D's
score-head bias frozen; the warmup batch rule); with the current code the test passed for
seeds 0, 1 and 3 (re-run by hand). ~35 s of wall time on the 2-core CPU at load ~6.
"""
import statistics

import pytest
from gadx.train.config import load_config

SEED = 1
STEPS, LAST, FIRST = 30, 8, 3
LEN = ["stages.max_response_len=24", "parallel.micro_batch_tokens=1024", "run.eval_every=0"]
WARMUP = ["run.plan=gad", "stages.sft_lr_schedule=constant", "stages.warmup.steps=24", "stages.warmup.g_only_steps=8",
          "stages.warmup.d_only_steps=8", "stages.warmup.d_every=1", "stages.warmup.d_lr=3e-3", "stages.gad.steps=0", "stages.gad.d_gate_steps=0"]
GAD = ["stages.n_samples=8", "stages.gad.lr=7e-3", "stages.gad.d_lr=3e-3"]


def _warmed_up(root, tiny_args):
    """Student and discriminator after the warmup, as HF folders."""
    from gadx.models import save_pretrained
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    cfg, _ = load_config(tiny_args(root / "warmup", f"run.seed={SEED}", *LEN, *WARMUP))
    env = Env(cfg)
    try:
        run = Run(cfg, env, name="gad", out_dir=root / "warmup" / "gad")
        run.train()
        save_pretrained(run.G.model, root / "G")
        env.tok.save(root / "G")
        save_pretrained(run.D.model, root / "D")
    finally:
        env.close()
    return run.last_heldout_acc


def _gad(root, tiny_args, frozen: bool) -> list[dict]:
    from gadx.train import run_steps

    out = root / ("frozen" if frozen else "online")
    cfg, _ = load_config(tiny_args(out, f"run.seed={SEED}", *LEN, *GAD,
                                   f"stages.gad.freeze_discriminator={str(frozen).lower()}"))
    return run_steps(cfg, STEPS, student=root / "G", discriminator=root / "D")


def _mean(rows, key):
    return statistics.mean(r[key] for r in rows)


def test_frozen_discriminator_is_reward_hacked(tmp_path, tiny_args, monkeypatch):
    # The fused kernels' PyTorch path: Triton's interpreter (tests/conftest.py) makes these
    # 84 training steps ~6x slower, and the dynamics, not the kernels, are under test here.
    monkeypatch.setenv("GADX_KERNEL_BACKEND", "torch")
    heldout = _warmed_up(tmp_path, tiny_args)
    assert heldout >= 0.75  # D starts clearly better than chance, or there is nothing to hack
    frozen, online = _gad(tmp_path, tiny_args, True), _gad(tmp_path, tiny_args, False)
    assert len(frozen) == len(online) == STEPS
    # same start, same seed: the first step's samples and D scores are the same in both runs
    assert frozen[0]["reward/mean"] == pytest.approx(online[0]["reward/mean"], abs=1e-3)
    assert frozen[0]["d_acc/train"] == online[0]["d_acc/train"]

    acc_frozen, acc_online = _mean(frozen[-LAST:], "d_acc/train"), _mean(online[-LAST:], "d_acc/train")
    rise_frozen = _mean(frozen[-LAST:], "reward/mean") - _mean(frozen[:FIRST], "reward/mean")
    msg = f"d_acc/train frozen {acc_frozen:.3f} online {acc_online:.3f}; frozen reward rise {rise_frozen:+.3f}"
    # frozen D: the student's samples now outscore the teacher's replies, and its reward climbed
    assert acc_frozen <= 0.3, msg
    assert rise_frozen >= 0.5, msg
    # online D: keeps telling them apart (near or above chance), far better than the frozen one
    assert acc_online >= 0.4, msg
    assert acc_online - acc_frozen >= 0.25, msg
