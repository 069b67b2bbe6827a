"""A stochastic teacher for the one-fetch-per-job tests: a gadx.serve backend that answers
every request with freshly drawn random words (the request's seed ignored, like a paid API
sampling at temperature 1.0) and counts the requests it got per prompt.

    teacher = StochasticTeacher(refuse="REFUSE")
    with start_in_thread(teacher) as server:   # server.url for teacher.base_url
        ...
    teacher.counts                              # Counter: last message content -> requests
"""
from __future__ import annotations

import collections
import random
import threading

from gadx.serve.protocol import BadRequest, Completion

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "fox", "golf", "hotel", "india", "one", "two", "7", "42",
         "the", "a", "name", "is", "Ada", "and", ".", ",")


class StochasticTeacher:
    name = "stochastic-teacher"

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.counts: collections.Counter = collections.Counter()
        self._rng = random.Random()  # unseeded on purpose: two asks of one prompt differ
        self._lock = threading.Lock()

    def check(self, request) -> None:
        content = request.messages[-1]["content"]
        with self._lock:
            self.counts[content] += 1  # refused requests are requests too
        if self.refuse and self.refuse in content:
            raise BadRequest(f"refused: {content!r}", "messages")

    def generate(self, batch) -> list[Completion]:
        out = []
        for _ in batch:
            text = " ".join(self._rng.choice(WORDS) for _ in range(self._rng.randint(2, 12)))
            out.append(Completion(text, "stop", 10, len(text.split())))
        return out
