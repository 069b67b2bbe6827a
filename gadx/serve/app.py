"""The aiohttp application behind `gadx serve`.

Requests that arrive together are batched: a single batcher task takes the
first queued request, waits up to `batch_wait_s` for more (at most
`max_batch`), and runs `backend.generate(batch)` in one worker thread. While a
batch generates, the next one queues up, so a busy server runs full batches.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from gadx.serve.backends import Backend
from gadx.serve.protocol import (
    BadRequest,
    ChatRequest,
    Completion,
    apply_stop,
    completion_body,
    error_body,
    parse_chat_request,
    stream_chunks,
)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    api_key: str | None = None  # the bearer token itself (read from an env var by the CLI)
    max_body_bytes: int = 4 * 1024 * 1024
    default_max_tokens: int = 512
    max_tokens_limit: int = 4096
    max_batch: int = 32
    batch_wait_s: float = 0.005
    model_name: str | None = None  # defaults to backend.name
    # Added to every request's answer time, concurrently (an asyncio sleep, no CPU): stands in for a
    # remote API's latency when the backend runs on the same machine (load tests, the e2e benchmark).
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.latency_s >= 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")


class Batcher:
    def __init__(self, backend: Backend, max_batch: int, wait_s: float):
        self.backend, self.max_batch, self.wait_s = backend, max_batch, wait_s
        self.queue: asyncio.Queue[tuple[ChatRequest, asyncio.Future]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gadx-serve-backend")
        self.batches = 0
        self.batch_sizes: list[int] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, request: ChatRequest) -> Completion:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((request, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            items = [(r, f) for r, f in items if not f.done()]  # clients that went away
            if not items:
                continue
            self.batches += 1
            self.batch_sizes.append(len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.backend.generate, [r for r, _ in items])
                assert len(results) == len(items), (len(results), len(items))
            except Exception as e:  # noqa: BLE001 -- the error goes to every request of the batch
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), c in zip(items, results):
                if not f.done():
                    f.set_result(c)


BATCHER = web.AppKey("batcher", Batcher)


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> web.Response:
    return web.json_response(error_body(message, type_=type_, param=param, code=code), status=status)


def make_app(backend: Backend, config: ServeConfig = ServeConfig()) -> web.Application:
    model_name = config.model_name or backend.name
    batcher = Batcher(backend, config.max_batch, config.batch_wait_s)
    started = int(time.time())

    def authorised(request: web.Request) -> bool:
        if config.api_key is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode())

    def unauthorised() -> web.Response:
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": model_name, "batches": batcher.batches})

    async def models(request: web.Request) -> web.Response:
        if not authorised(request):
            return unauthorised()
        return web.json_response({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": started, "owned_by": "gadx"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return unauthorised()
        if request.content_length is not None and request.content_length > config.max_body_bytes:
            return _error(413, f"request body of {request.content_length} bytes is above the limit of "
                               f"{config.max_body_bytes}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body is above the limit of {config.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except ValueError as e:
            return _error(400, f"could not parse the request body as JSON: {e}")
        try:
            req = parse_chat_request(body, default_max_tokens=config.default_max_tokens,
                                     max_tokens_limit=config.max_tokens_limit)
            backend.check(req)
            completion = apply_stop(await batcher.submit(req), req.stop)
            if config.latency_s > 0:
                await asyncio.sleep(config.latency_s)
        except BadRequest as e:
            return _error(e.status, e.message, param=e.param, code=e.code)
        except Exception as e:  # noqa: BLE001 -- a backend failure must still answer in the API's format
            return _error(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error")
        if not body.get("stream"):
            return web.json_response(completion_body(completion, model_name))
        opts = body.get("stream_options") or {}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for chunk in stream_chunks(completion, model_name, include_usage=bool(opts.get("include_usage"))):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def on_startup(app: web.Application) -> None:
        batcher.start()

    async def on_cleanup(app: web.Application) -> None:
        await batcher.stop()

    # client_max_size + 1 so our own check above answers first with an OpenAI-style body.
    app = web.Application(client_max_size=config.max_body_bytes + 1)
    app[BATCHER] = batcher
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
