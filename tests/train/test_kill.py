"""Kills and signals in a real `python -m gadx.train` process: no helper processes outlive a
SIGKILL; SIGINT / SIGTERM save a checkpoint at the next step boundary and print how to resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tiny_config import tiny_argv


def _start(tmp_path, world_tok, *extra):
    out = tmp_path / "run"
    argv = tiny_argv(out, world_tok, "run.plan=gad", *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gadx.train", *argv], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=Path(__file__).resolve().parents[2])
    return proc, out, tmp_path / "log.txt"


def _wait_for(cond, proc, log, timeout=240.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{Path(log).read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out:\n{Path(log).read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.slow  # a real training process, ~30 s on a loaded 2-core machine
def test_sigkill_leaves_no_helper_processes(tmp_path, world_tok):
    proc, out, log = _start(tmp_path, world_tok, "run.checkpoint_every=1")
    _wait_for(lambda: (out / "gad" / "checkpoints" / "latest").is_file(), proc, log)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "expected megatron's checkpoint helper processes while training runs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=15)
    for p in alive:  # clean up before failing
        p.kill()
    assert not alive, f"orphans after SIGKILL: {[(p.pid, p.name()) for p in alive]}"
    # the same command resumes (same config: no stop) and finishes; each step is logged once
    proc, out, log = _start(tmp_path, world_tok, "run.checkpoint_every=1")
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    steps = [json.loads(line)["step"] for line in _rows(out)]
    assert steps == list(range(len(steps))) and len(steps) == 5, steps  # warmup 3 + gad 2, no replayed rows


def _rows(out):
    f = out / "gad" / "metrics.jsonl"
    return f.read_text().splitlines() if f.is_file() else []


@pytest.mark.slow  # a real training process, ~30 s on a loaded 2-core machine
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_at_the_step_boundary_and_prints_the_resume_command(tmp_path, world_tok, sig, status):
    # no periodic saves: the only checkpoint can come from the signal
    proc, out, log = _start(tmp_path, world_tok, "run.checkpoint_minutes=0", "stages.warmup.steps=40")
    _wait_for(lambda: len(_rows(out)) >= 2, proc, log)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == status
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "resume with: python -m gadx.train --set" in text, text[-2000:]
    ckpts = out / "gad" / "checkpoints"
    latest = ckpts / (ckpts / "latest").read_text().strip()
    meta = json.loads((latest / "meta.json").read_text())
    assert meta["step"] == len(_rows(out))  # saved right after the last logged step
    for p in psutil.Process().children(recursive=True):
        assert p.pid != proc.pid


def test_boundary_saves_by_time_and_stops_on_a_signal():
    from gadx.train.stop import STOP, Boundary

    b = Boundary(every_steps=0, every_minutes=0.5 / 60)  # every 0.5 s
    assert b.check(1) == (False, False)
    time.sleep(0.6)
    assert b.check(2) == (True, False)
    b.saved()
    assert b.check(3) == (False, False)
    assert Boundary(every_steps=4, every_minutes=0).check(8) == (True, False)
    with STOP:
        STOP.in_loop = True
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: only a flag
            time.sleep(0.05)
            assert b.check(4) == (True, True) and STOP.signum == signal.SIGTERM
        finally:
            STOP.in_loop = False
    assert STOP.signum is None and b.check(5) == (False, False)  # nothing left for a later run
