"""Spawn WORLD processes of a worker script as torchrun would (RANK, WORLD_SIZE, MASTER_*), gloo."""
from __future__ import annotations

import os
import socket
import subprocess
import sys


def launch(script, args, world: int, *, timeout: float = 600, env: dict | None = None) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        e = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", **(env or {}))
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return wait_all(procs, timeout, "rank")


def wait_all(procs: list, timeout: float, what: str) -> list[str]:
    """Every process's output; all are killed if one outlives ``timeout``; a non-zero exit fails
    with the tail of that process's log (``what``: "rank", "agent", ...)."""
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"{what} {i} exited with {p.returncode}:\n{log[-4000:]}"
    return logs
