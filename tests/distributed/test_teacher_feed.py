"""One teacher fetch per job (gadx.train.teacher_feed), without a model: two gloo ranks, a
stochastic teacher counting requests. Every prompt is asked once per job, by rank 0 only;
the ranks of a replica (tp) get identical ids, data-parallel replicas (dp) their own halves of
rank 0's replies; a refused prompt raises on every rank instead of hanging the others."""
import json
from pathlib import Path

import pytest

import feed_worker
from launch import launch
from stochastic_teacher import StochasticTeacher

WORKER = Path(feed_worker.__file__)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both modes in one 2-process launch, each with its own stochastic teacher."""
    from gadx.serve import start_in_thread

    out = tmp_path_factory.mktemp("feed")
    teachers = {"tp": StochasticTeacher(refuse="REFUSE"), "dp": StochasticTeacher(refuse="REFUSE")}
    with start_in_thread(teachers["tp"]) as a, start_in_thread(teachers["dp"]) as b:
        launch(WORKER, [out, a.url, b.url], 2, timeout=120)
    return out, teachers


@pytest.mark.parametrize("mode", ["tp", "dp"])
def test_one_fetch_per_prompt(runs, mode):
    tmp_path, teachers = runs
    teacher = teachers[mode]
    r0, r1 = (json.loads((tmp_path / f"{mode}-rank{r}.json").read_text()) for r in range(2))
    assert r0["client"] and not r1["client"]  # one client per job
    # every prompt the data has no reply for, asked exactly once (the refused one too); the
    # prefetcher also asked the next steps' prompts ahead, once each
    asked = {feed_worker.prompt(s, j) for s in range(feed_worker.STEPS + 1) for j in range(3)} | {"held out"}
    assert asked <= set(teacher.counts) and set(teacher.counts.values()) == {1}
    for step in range(feed_worker.STEPS):
        a, b = r0["ids"][step], r1["ids"][step]
        if mode == "tp":
            assert a == b and len(a) == 4
        else:
            assert len(a) == len(b) == 2 and a != b
        ids = a + b if mode == "dp" else a
        assert ids[3] == [ord(c) for c in f"from the data {step}"]
    assert "prompt 31" in r0["error"] and "refused" in r0["error"]
    assert "rank 0" in r1["error"] and "refused" in r1["error"]
    assert r0["texts"] == r1["texts"] and r0["texts"][1] == "given" and r0["texts"][0]
