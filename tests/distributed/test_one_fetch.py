"""The trainer asks the teacher once per prompt per job (gadx.train.teacher_feed): 2 GAD steps
at TP=2 and at DP=2 against a stochastic teacher that counts its requests. Before, every rank
ran its own client: at TP=2 both ranks of the replica asked every prompt, and the two could
receive (and train on) different replies."""
import json
from pathlib import Path

import pytest

# one 2-process launch of the trainer at two layouts (~25 s quiet, 60-80 s at load 20-50 on 2
# cores); tests/distributed/test_teacher_feed.py is the default-run check of the same feed
pytestmark = pytest.mark.slow

import fetch_worker
from launch import launch
from stochastic_teacher import StochasticTeacher
from tiny_folders import make_folders

WORKER = Path(fetch_worker.__file__)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from gadx.serve import start_in_thread

    folders = make_folders(tmp_path_factory.mktemp("one_fetch"))

    teachers = {"tp2": StochasticTeacher(), "dp2": StochasticTeacher()}
    with start_in_thread(teachers["tp2"]) as a, start_in_thread(teachers["dp2"]) as b:
        launch(WORKER, [folders / "student", folders / "disc", folders / "fetch", a.url, b.url], 2)
    out = {name: [json.loads((folders / "fetch" / name / f"rank{r}.json").read_text()) for r in range(2)]
           for name in teachers}
    out["unreachable"] = [(folders / "fetch" / f"unreachable-rank{r}.txt").read_text() for r in range(2)]
    return teachers, out


def test_unreachable_teacher_stops_every_rank(runs):
    r0, r1 = runs[1]["unreachable"]
    assert "teacher at http://127.0.0.1:9/v1 is unreachable" in r0
    assert r1.startswith("rank 0 could not open the teacher") and "unreachable" in r1


@pytest.mark.parametrize("layout", ["tp2", "dp2"])
def test_one_request_per_prompt(runs, layout):
    teachers, out = runs
    counts = teachers[layout].counts
    # the steps' prompts (and the prefetcher's look-ahead), each asked exactly once per job
    r0, r1 = out[layout]
    P = r0["batches"][0]["P"]
    assert len(counts) >= fetch_worker.STEPS * P and set(counts.values()) == {1}, counts
    assert len(r0["batches"]) == len(r1["batches"]) == fetch_worker.STEPS
    for a, b in zip(r0["batches"], r1["batches"]):
        if layout == "tp2":  # one replica: identical sequences on both of its ranks
            assert (a["tp_rank"], b["tp_rank"]) == (0, 1)
            assert a["prompts"] == b["prompts"] and a["teacher"] == b["teacher"] and a["first"] == b["first"] == 0
        else:  # two replicas: each its own half of the step
            assert (a["dp_rank"], b["dp_rank"], a["first"], b["first"]) == (0, 1, 0, P // 2)
            assert len(a["teacher"]) == len(b["teacher"]) == P // 2 and a["prompts"] != b["prompts"]
    assert all(r["grad_norm/g"] > 0 for r in r0["rows"])
