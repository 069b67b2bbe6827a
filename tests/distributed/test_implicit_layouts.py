"""The implicit-reward D (discriminator.kind=implicit) at TP=2, PP=2 and DP=2 over gloo logs the
same GAD steps as at TP=PP=DP=1: its scores (the reward), its Bradley-Terry loss before and after
the update, its gradient norm and the student's update (float tolerance: layouts differ only in
reduction order). The D starts as the student (D = 0 at step 0), so step 0's D loss is log 2."""
import math
from pathlib import Path

import pytest

import implicit_worker
from launch import launch
from tiny_folders import make_folders

WORKER = Path(implicit_worker.__file__)
KEYS = ("loss/d", "loss/d_pre", "d_acc/train", "d_acc/train_post", "reward/mean", "reward/std", "grad_norm/d",
        "grad_norm/g", "loss/g_pg", "kl")
RTOL, ATOL = 1e-4, 1e-5


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # 4 layouts in 2 launches: 7-15 min on 2 busy cores


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = make_folders(tmp_path_factory.mktemp("implicit_layouts"))
    launch(WORKER, [root / "student", root, "1x1"], 1)
    launch(WORKER, [root / "student", root, "2x1", "1x2", "1x1"], 2)
    return root


def rows(root, name):
    import json

    return json.loads((root / f"implicit-{name}" / "rows.json").read_text())


def test_reference_starts_at_zero_and_learns(runs):
    ref = rows(runs, "tp1pp1dp1")
    assert len(ref) == 3
    # D == S exactly at the start: every score 0, no advantage, no policy gradient
    assert ref[0]["reward/mean"] == 0.0 and ref[0]["reward/std"] == 0.0 and ref[0]["loss/d_pre"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(r["grad_norm/d"] > 0 for r in ref)
    assert ref[-1]["reward/std"] > 0  # D's scores spread after its first updates


@pytest.mark.parametrize("name", ["tp2pp1dp1", "tp1pp2dp1", "tp1pp1dp2"])
def test_layout_matches_tp1(runs, name):
    want, got = rows(runs, "tp1pp1dp1"), rows(runs, name)
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        for k in KEYS:
            if step == 0 and k == "d_acc/train_post":
                continue  # D == 0 at step 0: its post-update "correct" counts strict wins among float-noise ties
            assert abs(g[k] - w[k]) <= ATOL + RTOL * abs(w[k]), f"{name} step {step} {k}: {g[k]} vs TP1 {w[k]}"
