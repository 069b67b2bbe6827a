"""Kills and signals in a real `python -m gadx.train` process: no helper processes outlive a
SIGKILL; SIGINT / SIGTERM save a checkpoint at the next step boundary and print how to resume."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import tiny_argv


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
