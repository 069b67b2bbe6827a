"""Keep the next `depth` batches of teacher replies in flight while the trainer trains.

    batches = ([{"messages": p, "temperature": 1.0, "max_tokens": 512} for p in chunk] for chunk in prompt_chunks)
    pre = Prefetcher(teacher, batches, depth=2)
    for step in range(n_steps):
        replies = pre.get()            # blocks only if the teacher is behind
        log(teacher_wait_s=pre.last_wait_s)
        train_step(replies)

A request is a dict of `TeacherClient.submit` keyword arguments (`messages`,
optional `sample_index`, sampling params). `get()` returns one entry per request,
in order: a `Reply`, or the `PermanentError` / `RetriesExhausted` that request
ended with (the trainer decides to skip it). Fatal errors (quota, budget,
closed client) are raised. Only `depth` batches are ever submitted ahead, so a
slow teacher back-pressures the data pipeline instead of queueing without bound.
"""
from __future__ import annotations

import collections
import concurrent.futures
import time
from typing import Any, Iterable

from gadx.teacher.client import Reply, TeacherClient
from gadx.teacher.errors import BudgetExceeded, ClientClosed, QuotaExceeded, TeacherError

FATAL = (QuotaExceeded, BudgetExceeded, ClientClosed)


class Prefetcher:
    def __init__(self, client: TeacherClient, batches: Iterable[list[dict[str, Any]]], *, depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.client, self.depth = client, depth
        self._batches = iter(batches)
        self._ahead: collections.deque[list[concurrent.futures.Future]] = collections.deque()
        self._exhausted = False
        self.last_wait_s = 0.0
        self.total_wait_s = 0.0
        self.steps = 0
        self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < self.depth and not self._exhausted:
            batch = next(self._batches, None)
            if batch is None:
                self._exhausted = True
                return
            futures = []
            for req in batch:
                req = dict(req)
                futures.append(self.client.submit(req.pop("messages"), **req))
            self._ahead.append(futures)

    def get(self) -> list[Reply | TeacherError]:
        """The next batch's replies, in request order; raises StopIteration when there are no more."""
        if not self._ahead:
            raise StopIteration
        futures = self._ahead.popleft()
        self._fill()  # keep `depth` batches working while we wait and while the caller trains
        t0 = time.perf_counter()
        concurrent.futures.wait(futures)
        self.last_wait_s = time.perf_counter() - t0
        self.total_wait_s += self.last_wait_s
        self.steps += 1
        out: list[Reply | TeacherError] = []
        for f in futures:
            exc = f.exception()
            if isinstance(exc, FATAL) or (exc is not None and not isinstance(exc, TeacherError)):
                raise exc
            out.append(exc if exc is not None else f.result())
        return out

    def __iter__(self):
        return self

    def __next__(self) -> list[Reply | TeacherError]:
        return self.get()
