"""Prefetching overlaps teacher latency with training."""
from __future__ import annotations

import time

from gadx.teacher import PermanentError, Prefetcher, TeacherClient


def test_prefetch_step_costs_max_not_sum(fake, tmp_path, quiet_machine):
    fake.latency = 0.3
    batches = ([{"messages": [{"role": "user", "content": f"s{s}r{r}"}], "max_tokens": 8} for r in range(4)]
               for s in range(7))
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite") as t:
        pre = Prefetcher(t, batches, depth=2)
        steps, waits = [], []
        for replies in pre:
            t0 = time.perf_counter()
            assert len(replies) == 4 and all(r.text.startswith("re: s") for r in replies)
            time.sleep(0.2)  # the train step
            steps.append(time.perf_counter() - t0 + pre.last_wait_s)
            waits.append(pre.last_wait_s)
    assert len(steps) == 7
    steady = steps[1:]
    assert sum(steady) / len(steady) < 0.36, steps  # ~max(0.2, 0.3); the sum would be 0.5
    assert max(waits[1:]) < 0.15, waits


def test_prefetch_returns_permanent_errors_in_place(fake, tmp_path):
    fake.script["bad"] = [{"kind": "status", "code": 400, "body": b'{"error": {"message": "too long"}}'}]
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite") as t:
        pre = Prefetcher(t, [[{"messages": [{"role": "user", "content": c}]} for c in ("a", "bad", "c")]], depth=3)
        out = pre.get()
    assert out[0].text == "re: a" and isinstance(out[1], PermanentError) and out[2].text == "re: c"
