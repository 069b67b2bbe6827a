"""Step boundaries: when to save a checkpoint and when to stop (SIGINT / SIGTERM).

    with STOP:                                   # gadx.train.run: handlers for the whole run
        ...
        boundary = Boundary(every_steps=0, every_minutes=5.0, device=dims.device)
        save, stop = boundary.check(step)        # every rank, after every step (collective)

A first SIGINT (Ctrl-C) or SIGTERM (a cluster's preemption notice) inside a training loop only
sets a flag: the loop finishes its step, saves a checkpoint and raises ``Interrupted``, which
``gadx.train.main`` turns into the resume command and exit status 128 + signal. A signal
outside a training loop (setup, final evaluation), or a second one, stops at once. Under
torchrun every rank must save together: the flags are combined by an all-reduce (MAX), so a
signal that reached only some ranks stops all of them at the same step.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised at a step boundary after a signal, once the checkpoint is saved."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class GracefulStop:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_loop = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "GracefulStop":
        self.signum = None
        if threading.current_thread() is threading.main_thread():  # Python only allows handlers there
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        self.signum = None  # a later run in this process starts clean

    def _restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None or not self.in_loop:
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        print(f"\ngadx.train: {signal.Signals(signum).name}: saving a checkpoint after this step, then stopping "
              "(send it again to stop now without saving)", file=sys.stderr, flush=True)


STOP = GracefulStop()


class Boundary:
    """Decides, the same way on every rank, whether a step boundary saves and whether it stops."""

    def __init__(self, *, every_steps: int, every_minutes: float, device: torch.device | str = "cpu"):
        self.every_steps, self.every_s = every_steps, every_minutes * 60.0
        self.device = device
        self.last_save = time.monotonic()

    def check(self, step: int) -> tuple[bool, bool]:
        stop = STOP.signum is not None
        timed = self.every_s > 0 and time.monotonic() - self.last_save >= self.every_s
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flags = torch.tensor([int(stop), int(timed), STOP.signum or 0], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)  # one rank's signal or clock stops/saves all
            stop, timed, signum = bool(flags[0]), bool(flags[1]), int(flags[2])
            if stop and STOP.signum is None:
                STOP.signum = signum
        save = stop or timed or bool(self.every_steps and step % self.every_steps == 0)
        return save, stop

    def saved(self) -> None:
        self.last_save = time.monotonic()
