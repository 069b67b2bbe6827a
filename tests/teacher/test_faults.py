"""The teacher client against a scripted fake server: every failure mode a real API shows."""
from __future__ import annotations

import email.utils
import json
import math
import time

import pytest

from gadx.teacher import (
    BudgetExceeded,
    PermanentError,
    Price,
    QuotaExceeded,
    RetriesExhausted,
    RetryPolicy,
    TeacherClient,
)

FAST = RetryPolicy(base_s=0.01, cap_s=0.05, deadline_s=30)


def msg(content: str) -> list[dict]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]


def client(fake, tmp_path, **kw) -> TeacherClient:
    kw.setdefault("retry", FAST)
    return TeacherClient(fake.url, "teacher-model", cache_path=tmp_path / "cache.sqlite", **kw)


def err(message: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "x", "code": code}}).encode()


def test_ok_then_second_run_sends_nothing(fake, tmp_path):
    prompts = [f"p{i}" for i in range(20)]
    with client(fake, tmp_path) as t:
        first = [t.submit(msg(p), temperature=0.7, max_tokens=8).result() for p in prompts]
        assert t.stats()["ok"] == 20
    assert all(not r.cached and r.text == f"re: {p}" for r, p in zip(first, prompts))
    sent = sum(fake.hits.values())
    assert sent == 20
    with client(fake, tmp_path) as t:
        futures = [t.submit(msg(p), max_tokens=8, temperature=0.7) for p in prompts]  # kwarg order differs
        again = [f.result() for f in futures]
        assert t.stats()["hits"] == 20 and t.stats()["sent"] == 0
    assert sum(fake.hits.values()) == sent
    assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)


def test_sample_index_and_sampling_change_the_key(fake, tmp_path):
    with client(fake, tmp_path) as t:
        futs = [t.submit(msg("x"), sample_index=i, seed=7) for i in range(3)]
        futs.append(t.submit(msg("x"), sample_index=0, seed=7, temperature=0.5))
        [f.result() for f in futs]
    assert fake.content_hits["x"] == 4 and len(fake.hits) == 4
    assert sorted(b["seed"] for b in fake.bodies) == [7, 7, 8, 9]  # seed + sample_index


def test_mutating_messages_after_submit_does_not_change_the_key(fake, tmp_path):
    m = msg("stable")
    with client(fake, tmp_path) as t:
        f = t.submit(m, max_tokens=4)
        m[1]["content"] = "mutated"
        assert f.result().text == "re: stable"
    with client(fake, tmp_path) as t:
        assert t.submit(msg("stable"), max_tokens=4).result().cached
    assert fake.content_hits == {"stable": 1}


def test_identical_in_flight_requests_share_one_call(fake, tmp_path):
    fake.latency = 0.2
    with client(fake, tmp_path) as t:
        futs = [t.submit(msg("same")) for _ in range(10)]
        texts = {f.result().text for f in futs}
        assert t.stats()["shared"] == 9
    assert texts == {"re: same"} and fake.content_hits["same"] == 1


@pytest.mark.parametrize("form", ["seconds", "ms", "http-date"])
def test_429_waits_at_least_retry_after_and_pauses_everyone(fake, tmp_path, form):
    if form == "seconds":
        headers, asked_until = {"retry-after": "1"}, None
    elif form == "ms":
        headers, asked_until = {"retry-after-ms": "600"}, None
    else:
        when = math.floor(time.time()) + 2
        headers, asked_until = {"retry-after": email.utils.formatdate(when, usegmt=True)}, when
    fake.script["a"] = [{"kind": "status", "code": 429, "body": err("Rate limit reached", "rate_limit_exceeded"),
                         "headers": headers}]
    wait = {"seconds": 1.0, "ms": 0.6, "http-date": None}[form]
    with client(fake, tmp_path) as t:
        fa = t.submit(msg("a"))
        while not fake.times["a"]:
            time.sleep(0.005)
        time.sleep(0.05)
        fb = t.submit(msg("b"))
        assert fa.result(timeout=10).text == "re: a" and fb.result(timeout=10).text == "re: b"
        assert t.stats()["http_429"] == 1
    first, second = fake.times["a"]
    assert fake.content_hits["a"] == 2
    if asked_until is None:
        assert second - first >= wait
        assert fake.times["b"][0] - first >= wait  # the gate is global
    else:
        assert second >= asked_until and fake.times["b"][0] >= asked_until


def test_insufficient_quota_stops_everything_after_one_hit(fake, tmp_path):
    fake.script["q"] = [{"kind": "status", "code": 429,
                         "body": err("You exceeded your current quota", "insufficient_quota")}] * 5
    with client(fake, tmp_path) as t:
        with pytest.raises(QuotaExceeded, match="quota"):
            t.submit(msg("q")).result(timeout=5)
        with pytest.raises(QuotaExceeded):
            t.submit(msg("later")).result(timeout=5)
    assert fake.content_hits == {"q": 1}


def test_500_html_is_retried(fake, tmp_path):
    fake.script["h"] = [{"kind": "status", "code": 500, "content_type": "text/html",
                         "body": b"<html><body><h1>500 Internal Server Error</h1></body></html>"}]
    with client(fake, tmp_path) as t:
        assert t.submit(msg("h")).result(timeout=5).text == "re: h"
        assert t.stats()["retries"] == {"server": 1}
    assert fake.content_hits["h"] == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_permanent_errors_are_not_retried_and_are_cached(fake, tmp_path, code):
    text = "This model's maximum context length is 8192 tokens" if code == 400 else f"nope {code}"
    fake.script["c"] = [{"kind": "status", "code": code, "body": err(text, "context_length_exceeded")}] * 3
    with client(fake, tmp_path) as t:
        with pytest.raises(PermanentError) as info:
            t.submit(msg("c")).result(timeout=5)
        assert info.value.status == code and text in info.value.message and not info.value.cached
    with client(fake, tmp_path) as t:
        with pytest.raises(PermanentError) as info:
            t.submit(msg("c")).result(timeout=5)
        assert info.value.cached and text in info.value.message
    assert fake.content_hits["c"] == 1


def test_hang_past_read_timeout_is_retried(fake, tmp_path):
    fake.script["slow"] = [{"kind": "hang", "seconds": 1.5}]
    with client(fake, tmp_path, timeout_s=0.3) as t:
        t0 = time.monotonic()
        assert t.submit(msg("slow")).result(timeout=10).text == "re: slow"
        assert time.monotonic() - t0 < 1.4
    assert fake.content_hits["slow"] == 2


def test_connection_reset_mid_body_is_retried(fake, tmp_path):
    fake.script["r"] = [{"kind": "reset"}]
    with client(fake, tmp_path) as t:
        assert t.submit(msg("r")).result(timeout=5).text == "re: r"
    assert fake.content_hits["r"] == 2


@pytest.mark.parametrize("body", [
    b'{"id": "x", "choices": [{"message": {"content": "tru',  # truncated JSON
    b'{"id": "x", "object": "chat.completion"}',  # missing choices
    b'{"id": "x", "choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "stop"}]}',
])
def test_malformed_200_is_retried_at_most_twice(fake, tmp_path, body):
    fake.script["m"] = [{"kind": "raw", "body": body}]
    fake.script["mmm"] = [{"kind": "raw", "body": body}] * 3
    with client(fake, tmp_path) as t:
        assert t.submit(msg("m")).result(timeout=5).text == "re: m"
        with pytest.raises(RetriesExhausted, match="malformed"):
            t.submit(msg("mmm")).result(timeout=5)
    assert fake.content_hits["m"] == 2 and fake.content_hits["mmm"] == 3
    with client(fake, tmp_path) as t:  # not cached: a re-run tries again
        assert t.submit(msg("mmm")).result(timeout=5).text == "re: mmm"


def test_missing_usage_is_estimated(fake, tmp_path):
    fake.script["u"] = [{"kind": "ok", "usage": None, "text": "x" * 40}]
    with client(fake, tmp_path) as t:
        r = t.submit(msg("u")).result(timeout=5)
    assert r.usage["estimated"] and r.usage["completion_tokens"] == 11
    assert fake.content_hits["u"] == 1


def test_usage_and_cost(fake, tmp_path):
    price = Price(input_per_mtok=1e6, cached_input_per_mtok=0.5e6, output_per_mtok=2e6)  # $ per token, easy sums
    fake.script["k"] = [{"kind": "ok", "usage": {"prompt_tokens": 10, "completion_tokens": 3,
                                                  "prompt_tokens_details": {"cached_tokens": 4}}}]
    with client(fake, tmp_path, prices=price) as t:
        r = t.submit(msg("k")).result(timeout=5)
        assert r.cost_usd == pytest.approx(6 + 2 + 6) and t.stats()["cost_usd"] == pytest.approx(14)


def test_budget_stops_cleanly(fake, tmp_path):
    price = Price(input_per_mtok=1e6, output_per_mtok=1e6)  # a reply of 15 tokens costs $15; the estimate is $16
    with client(fake, tmp_path, prices=price, max_usd=40) as t:
        results = []
        for i in range(5):
            try:
                results.append(t.submit(msg(f"b{i}"), max_tokens=5).result(timeout=5))
            except BudgetExceeded as e:
                results.append(e)
        assert t.stats()["cost_usd"] <= 40
    assert [type(r).__name__ for r in results] == ["Reply", "Reply", "BudgetExceeded", "BudgetExceeded", "BudgetExceeded"]
    assert sum(fake.content_hits.values()) == 2


@pytest.mark.parametrize("bad", [
    dict(messages="hello"),
    dict(messages=[]),
    dict(messages=[{"role": "robot", "content": "x"}]),
    dict(messages=[{"role": "user", "content": 3}]),
    dict(messages=msg("x"), temperature=float("nan")),
    dict(messages=msg("x"), stream=True),
    dict(messages=msg("x"), n=4),
    dict(messages=msg("x"), max_tokens=0),
    dict(messages=msg("x"), sample_index=-1),
])
def test_bad_input_raises_before_any_request(fake, tmp_path, bad):
    with client(fake, tmp_path) as t:
        with pytest.raises(ValueError):
            t.submit(bad.pop("messages"), **bad)
    assert not fake.hits


def test_api_key_from_env_only(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("GADX_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="GADX_TEST_KEY"):
        client(fake, tmp_path, api_key_env="GADX_TEST_KEY")
    monkeypatch.setenv("GADX_TEST_KEY", "sk-secret-123")
    with client(fake, tmp_path, api_key_env="GADX_TEST_KEY") as t:
        t.submit(msg("s")).result(timeout=5)
        assert "sk-secret" not in repr(t) and "sk-secret" not in json.dumps(t.stats())
    assert b"sk-secret" not in (tmp_path / "cache.sqlite").read_bytes()
    for extra in tmp_path.glob("cache.sqlite*"):
        assert b"sk-secret" not in extra.read_bytes()


def test_ratelimit_headers_on_success_close_the_gate(fake, tmp_path):
    fake.ok_headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "700ms"}
    with client(fake, tmp_path) as t:
        t.submit(msg("h1")).result(timeout=5)
        t.submit(msg("h2")).result(timeout=5)
    assert fake.times["h2"][0] - fake.times["h1"][0] >= 0.7
