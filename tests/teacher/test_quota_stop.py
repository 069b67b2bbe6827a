"""After a quota error nothing more leaves the client, and no reply already paid for is thrown away."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import time

import aiohttp
import pytest

from gadx.teacher import ClientClosed, QuotaExceeded, RetryPolicy, TeacherClient

QUOTA = {"kind": "status", "code": 429,
         "body": json.dumps({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                       "code": "insufficient_quota"}}).encode()}
FAST = RetryPolicy(base_s=0.01, cap_s=0.05, deadline_s=30)


def msg(content):
    return [{"role": "user", "content": content}]


@pytest.fixture
def slow_connections(monkeypatch):
    """Every new connection but the first takes 0.3 s to set up (a cold DNS cache, a TLS handshake,
    a loaded machine): the window in which the old client let requests leave after a quota error."""
    original = aiohttp.TCPConnector._create_connection
    calls = []

    async def slow(self, req, traces, timeout):
        calls.append(req.url)
        if len(calls) > 1:
            await asyncio.sleep(0.3)
        return await original(self, req, traces, timeout)

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", slow)
    return calls


@pytest.mark.parametrize("rep", range(3))
def test_nothing_is_sent_after_a_quota_error(fake, tmp_path, slow_connections, rep):
    for i in range(8):
        fake.script[f"q{i}"] = [QUOTA] * 3
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", retry=FAST, max_in_flight=8) as t:
        futs = [t.submit(msg(f"q{i}")) for i in range(8)]
        cf.wait(futs, timeout=10)
        assert all(isinstance(f.exception(), QuotaExceeded) for f in futs)
        time.sleep(0.6)  # long enough for every delayed connection to finish connecting
        assert sum(fake.content_hits.values()) == 1, fake.content_hits  # only the request that got the error
        with pytest.raises(QuotaExceeded):
            t.submit(msg("later")).result(timeout=5)
    assert sum(fake.content_hits.values()) == 1


def test_replies_on_the_wire_at_a_quota_error_are_kept(fake, tmp_path):
    """Requests already sent when the quota error arrives may be answered and billed: their futures wait
    for their own outcome (and the reply is committed) instead of failing at once."""
    fake.script["q"] = [QUOTA]
    for i in range(5):
        fake.script[f"slow{i}"] = [{"kind": "ok", "delay": 0.4, "text": f"paid {i}"}]
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", retry=FAST) as t:
        slow = [t.submit(msg(f"slow{i}")) for i in range(5)]
        deadline = time.monotonic() + 5
        while sum(fake.content_hits.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(QuotaExceeded):
            t.submit(msg("q")).result(timeout=5)
        assert [f.result(timeout=5).text for f in slow] == [f"paid {i}" for i in range(5)]
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", retry=FAST) as t:
        assert all(t.submit(msg(f"slow{i}")).result(timeout=5).cached for i in range(5))
    assert sum(fake.content_hits.values()) == 6


def test_queued_requests_fail_fast_on_quota_without_being_sent(fake, tmp_path):
    fake.script["q"] = [QUOTA]
    fake.latency = 0.2
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", retry=FAST, max_in_flight=1) as t:
        first = t.submit(msg("q"))
        queued = [t.submit(msg(f"w{i}")) for i in range(20)]
        with pytest.raises(QuotaExceeded):
            first.result(timeout=5)
        for f in queued:
            assert isinstance(f.exception(timeout=5), (QuotaExceeded, ClientClosed))
    assert sum(fake.content_hits.values()) == 1


def test_a_request_still_connecting_when_a_429_pause_begins_waits_for_it(fake, tmp_path, slow_connections):
    fake.script["a"] = [{"kind": "status", "code": 429, "headers": {"retry-after": "1"},
                         "body": b'{"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}'}]
    with TeacherClient(fake.url, "m", cache_path=tmp_path / "c.sqlite", retry=FAST) as t:
        fa = t.submit(msg("a"))
        fb = t.submit(msg("b"))  # passes the limiter at once, then spends 0.3 s connecting
        assert fa.result(timeout=10).text == "re: a" and fb.result(timeout=10).text == "re: b"
    first_a = fake.times["a"][0]
    assert fake.times["b"][0] - first_a >= 1.0  # the pause is global, late connectors included
