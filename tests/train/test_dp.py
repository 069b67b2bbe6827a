"""DP=2 equals DP=1 with the same global batch: two gloo processes vs one, same tiny GAD run.

Rollouts are seeded per call by the global index of the call's first prompt
(stages.rollout_prompts_per_call=2 divides both layouts' per-rank shares), every
normaliser is global, and logged metrics are DP means: the only differences left
are float summation order in the gradient all-reduce.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runs import rows

HERE = Path(__file__).parent

CHILD = r"""
import sys
sys.path.insert(0, {here!r})
from tiny_config import tiny_argv
from runs import train
train_args = lambda out, *extra: tiny_argv(out, {tok!r}, *extra)
from pathlib import Path
from gadx.parallel import destroy_parallel
train(Path({out!r}), train_args)
destroy_parallel()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, out: Path, tok: str) -> None:
    code = CHILD.format(here=str(HERE), tok=tok, out=str(out))
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-W", "ignore", "-c", code], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]


@pytest.mark.slow  # three processes of a tiny run: ~100 s here under load
def test_dp2_equals_dp1(tmp_path, world_tok):
    _launch(1, tmp_path / "dp1", world_tok)
    _launch(2, tmp_path / "dp2", world_tok)
    a, b = rows(tmp_path / "dp1" / "gad" / "metrics.jsonl"), rows(tmp_path / "dp2" / "gad" / "metrics.jsonl")
    assert [r["stage"] for r in a] == [r["stage"] for r in b] == ["warmup"] * 3 + ["gad"] * 2
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if k == "reward/mean":
                # Raw D scores carry the score head's bias, which Bradley-Terry leaves without gradient:
                # Adam turns its float-noise gradient into steps of up to lr (d_lr=1e-3) whose sign
                # depends on summation order. Score differences (loss/d_pre, d_acc, advantages) are exact.
                assert y[k] == pytest.approx(x[k], abs=2e-3 * x["step"]), x["step"]
            elif isinstance(x[k], float):
                assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-5), (x["step"], k)
            else:
                assert y[k] == x[k], (x["step"], k)
