"""Loopback throughput: gadx's TeacherClient vs the official openai SDK's AsyncOpenAI.

    python -m pytest benchmarks/bench_teacher.py -q -s
    GADX_BENCH_SMOKE=1 python -m pytest benchmarks/bench_teacher.py   # seconds: 64 requests, 16 in flight

A zero-latency aiohttp chat server runs in a separate process on 127.0.0.1 and
answers every request with the same small completion. Each client sends the same
number N of distinct requests with at most C in flight (C = 64, 256); the figure is
requests/s, median (min-max) of ``ROUNDS`` = 5 rounds, the clients one after the other
within each round (never at once). gadx runs without a cache (network path only), and
again with a fresh SQLite cache per round (every reply committed with synchronous=FULL
before its future resolves). The SDK uses DefaultAioHttpClient when the installed openai
has it (else its default httpx client), with its connection pool sized to the in-flight
count (``limits`` max_connections = max_keepalive_connections = C: its defaults, 100
connections for aiohttp and 100 kept alive for httpx, would queue or reconnect at C = 256),
its default max_retries, and an asyncio.Semaphore(C) as its in-flight cap.
``GADX_BENCH_RESULTS=1`` writes benchmarks/results/teacher.json (benchmarks/results.py).
Without the openai package gadx's side still runs (and its checks); the comparison is skipped.
"""
from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadx.teacher import TeacherClient

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import pick  # noqa: E402
from results import Results, table  # noqa: E402

try:
    import openai
except ImportError:  # the peer is optional: gadx's side still runs
    openai = None

SERVER = r"""
import json, sys
from aiohttp import web
BODY = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
async def chat(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
import asyncio
asyncio.run(main())
"""

N_REQUESTS = pick(full=2000, smoke=64)  # per client and round: the same count for gadx and the SDK
ROUNDS = pick(full=5, smoke=1)
CONCURRENCY = pick(full=[64, 256], smoke=[16])
N_HITS = pick(full=2000, smoke=64)


@pytest.fixture(scope="module")
def server_url():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def results():
    res = Results("teacher", rounds=ROUNDS, threads=1, requests_per_round=N_REQUESTS,
                  server="aiohttp, zero latency, one process on 127.0.0.1",
                  note="clients one after the other within each round; rates are requests/s per round")
    yield res
    if res.rows:
        res.write()
        print("\n" + table(res.data))


def msgs(tag: str, i: int) -> list[dict]:
    return [{"role": "user", "content": f"{tag} request {i}"}]


def run_ours(url: str, concurrency: int, n: int, cache_path, tag: str) -> float:
    with TeacherClient(url, "m", cache_path=cache_path, max_in_flight=concurrency) as t:
        t.submit(msgs(tag + "warm", 0), max_tokens=8).result()
        t0 = time.perf_counter()
        futs = [t.submit(msgs(tag, i), max_tokens=8) for i in range(n)]
        for f in futs:
            assert f.result().text == "ok"
        dt = time.perf_counter() - t0
        assert t.stats()["sent"] == n + 1
    return n / dt


def run_sdk(url: str, concurrency: int, n: int) -> float:
    async def go() -> float:
        kwargs = {}
        # the pool sized to the in-flight count (its Limits class is the one the installed SDK uses)
        limits = type(openai._constants.DEFAULT_CONNECTION_LIMITS)(max_connections=concurrency,
                                                                   max_keepalive_connections=concurrency)
        if hasattr(openai, "DefaultAioHttpClient"):
            kwargs["http_client"] = openai.DefaultAioHttpClient(limits=limits)
        else:
            kwargs["http_client"] = openai.DefaultAsyncHttpxClient(limits=limits)
        # max_retries left at its default (2): on a loaded machine a loopback connect can time out
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", **kwargs)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                r = await client.chat.completions.create(model="m", messages=msgs("sdk", i), max_tokens=8)
                assert r.choices[0].message.content == "ok"

        await one(-1)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        dt = time.perf_counter() - t0
        await client.close()
        return n / dt

    return asyncio.run(go())


@pytest.mark.parametrize("concurrency", CONCURRENCY)
def test_requests_per_second(server_url, concurrency, results, tmp_path):
    ours, cached, sdk = [], [], []
    for r in range(ROUNDS):  # each client in turn, never two at once
        ours.append(run_ours(server_url, concurrency, N_REQUESTS, None, f"nc{r}"))
        cached.append(run_ours(server_url, concurrency, N_REQUESTS, tmp_path / f"cache{r}.sqlite", f"c{r}"))
        if openai is not None:
            sdk.append(run_sdk(server_url, concurrency, N_REQUESTS))
    if openai is None:
        pytest.skip("openai (the peer) is not installed: gadx's side ran and passed its checks")
    peer = f"openai {openai.__version__} AsyncOpenAI" + (" (aiohttp)" if hasattr(openai, "DefaultAioHttpClient") else "") \
        + f", pool {concurrency}, {concurrency} in flight"
    results.row(peer, sdk, unit="req/s")
    a = results.row(f"gadx TeacherClient, {concurrency} in flight, no cache", ours, unit="req/s", baseline=peer,
                    higher_is_better=True)
    b = results.row(f"gadx TeacherClient, {concurrency} in flight, SQLite cache", cached, unit="req/s", baseline=peer,
                    higher_is_better=True)
    print(f"\nC={concurrency}: gadx {a['median']:.0f} req/s (cache {b['median']:.0f}), SDK {statistics.median(sdk):.0f} "
          f"req/s -> {a['ratio_vs_baseline']:.2f}x / {b['ratio_vs_baseline']:.2f}x; rounds ours={[round(x) for x in ours]} "
          f"cached={[round(x) for x in cached]} sdk={[round(x) for x in sdk]}")


def test_cache_hits_per_second(server_url, tmp_path, benchmark, results):
    path = tmp_path / "hits.sqlite"
    with TeacherClient(server_url, "m", cache_path=path, max_in_flight=64) as t:
        [f.result() for f in [t.submit(msgs("hit", i), max_tokens=8) for i in range(N_HITS)]]
    rates = []

    def hits():
        t0 = time.perf_counter()
        with TeacherClient(server_url, "m", cache_path=path, max_in_flight=64) as t:
            futs = [t.submit(msgs("hit", i), max_tokens=8) for i in range(N_HITS)]
            assert all(f.result().cached for f in futs) and t.stats()["sent"] == 0
        rates.append(N_HITS / (time.perf_counter() - t0))

    # the rounds in one call: with --benchmark-disable pytest-benchmark would run a pedantic() once
    benchmark.pedantic(lambda: [hits() for _ in range(ROUNDS)], rounds=1, iterations=1)
    assert len(rates) == ROUNDS, rates
    results.row(f"gadx TeacherClient cache hits ({N_HITS}, client open + close included)", rates, unit="req/s")
