"""Helper processes that die with the process that started them.

megatron's torch_dist checkpoint writer keeps a ``multiprocessing`` manager (a spawned server
process holding its results queue) for the life of the run, and multiprocessing starts its
resource tracker for it. When the trainer is SIGKILLed (OOM killer, a cluster's hard kill),
nothing tells that server to stop: it stayed behind (~270 MB with the tracker). On Linux the
kernel can send a signal to a child when its parent dies (``PR_SET_PDEATHSIG``); the server
sets it for itself at start, and the resource tracker then exits once every holder of its
pipe is gone.

Kept free of heavy imports: the spawned server imports this module to run ``die_with_parent``.
"""
from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Run in a child: be SIGKILLed when ``parent_pid`` exits (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(0)


def checkpoint_results_queue():
    """Give megatron's async checkpoint writer (``filesystem_async``) its results queue from a
    manager that dies with this process, before megatron starts one that would not. Idempotent."""
    import multiprocessing as mp
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", None) is not None:
        return filesystem_async._results_queue
    manager = SyncManager(ctx=mp.get_context("spawn"))
    manager.start(die_with_parent, (os.getpid(),))
    filesystem_async._results_queue = manager.Queue()
    return filesystem_async._results_queue
