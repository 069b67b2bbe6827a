"""A fake OpenAI-compatible chat server on 127.0.0.1, scripted per request.

`server.script[content] = [action, action, ...]` gives the replies to the
successive hits of the request whose last message is `content`; after the list runs out, hits get a normal
200 reply. Actions are dicts with "kind":
  ok        200 reply (optional "text", "usage", "delay")
  status    {"code", "body" (bytes), "headers"}
  raw       200 with {"body": bytes} as is
  hang      sleep {"seconds"} before answering
  reset     send headers and half a body, then drop the connection
A server-wide sliding window (`server.window = (limit_requests, limit_tokens, window_s)`)
answers 429 with Retry-After when exceeded.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time

import pytest
from aiohttp import web


class FakeServer:
    def __init__(self):
        self.script: dict[str, list[dict]] = {}
        self.hits: collections.Counter = collections.Counter()  # by cache key (X-Gadx-Key)
        self.content_hits: collections.Counter = collections.Counter()  # by last message content
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.accepted: list[tuple[float, int]] = []  # (time, tokens) of requests within the window
        self.n_429 = 0
        self.window: tuple[int | None, int | None, float] | None = None
        self.latency = 0.0
        self.bodies: list[dict] = []
        self.ok_headers: dict[str, str] = {}  # added to every 200 reply

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        self.bodies.append(body)
        key = request.headers.get("X-Gadx-Key", "")
        content = body["messages"][-1]["content"]
        self.hits[key] += 1
        self.content_hits[content] += 1
        self.times[content].append(time.time())
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.window is not None:
            limit_req, limit_tok, window_s = self.window
            now = time.monotonic()
            while self.accepted and self.accepted[0][0] <= now - window_s:
                self.accepted.pop(0)
            tokens = body.get("max_tokens", 5) + 10
            if (limit_req is not None and len(self.accepted) + 1 > limit_req) or (
                limit_tok is not None and sum(t for _, t in self.accepted) + tokens > limit_tok
            ):
                self.n_429 += 1
                retry = self.accepted[0][0] + window_s - now
                return web.json_response(
                    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                    status=429, headers={"retry-after-ms": str(int(retry * 1000) + 1)},
                )
            self.accepted.append((now, tokens))
        actions = self.script.get(content, [])
        n = self.content_hits[content] - 1
        action = actions[n] if n < len(actions) else {"kind": "ok"}
        kind = action["kind"]
        if kind == "hang":
            await asyncio.sleep(action["seconds"])
            kind = "ok"
        if kind == "ok":
            if action.get("delay"):
                await asyncio.sleep(action["delay"])
            n_out = body.get("max_tokens", 5)
            usage = action.get("usage", {"prompt_tokens": 10, "completion_tokens": n_out, "total_tokens": 10 + n_out})
            reply = {
                "id": f"chatcmpl-{self.content_hits[content]}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": action.get("text", f"re: {content}")},
                             "finish_reason": "stop"}],
            }
            if usage is not None:
                reply["usage"] = usage
            return web.json_response(reply, headers=self.ok_headers)
        if kind == "status":
            return web.Response(status=action["code"], body=action["body"], headers=action.get("headers", {}),
                                content_type=action.get("content_type", "application/json"))
        if kind == "raw":
            return web.Response(status=200, body=action["body"], content_type="application/json")
        if kind == "reset":
            resp = web.StreamResponse(status=200, headers={"Content-Length": "500", "Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"id": "x", "choices": [{"message": {"content": "hal')
            request.transport.close()
            return resp
        raise AssertionError(kind)


class Running:
    def __init__(self, app: web.Application):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self.url = f"http://127.0.0.1:{port}/v1"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def fake():
    server = FakeServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    running = Running(app)
    server.url = running.url
    yield server
    running.stop()


@pytest.fixture
def quiet_machine():
    """Wall-clock rate tests measure the scheduler, not the client, when the machine is
    oversubscribed (multi-100 ms stalls); their deterministic twins run on a fake clock.
    GADX_FORCE_TIMING_TESTS=1 runs them anyway."""
    load = os.getloadavg()[0]
    if load > 2 * (os.cpu_count() or 1) and not os.environ.get("GADX_FORCE_TIMING_TESTS"):
        pytest.skip(f"load average {load:.1f} on {os.cpu_count()} cores: wall-clock rate test would be noise")
