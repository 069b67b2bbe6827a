"""TeacherClient: a synchronous front to an asyncio/aiohttp chat-completions client.

One daemon thread runs one event loop with one pooled aiohttp session. The
trainer calls `submit(...)` and gets a `concurrent.futures.Future` that resolves
to a `Reply` only after the reply is committed to the SQLite cache. A re-run
finds every committed key in the cache and makes no request for it.

    with TeacherClient("https://api.openai.com/v1", "gpt-5-chat-latest",
                       cache_path="teacher.sqlite", api_key_env="OPENAI_API_KEY",
                       rpm=500, tpm=500_000, max_usd=50) as teacher:
        fut = teacher.submit([{"role": "user", "content": "hi"}], temperature=0.8, max_tokens=256)
        print(fut.result().text, teacher.stats())

The API key is read once from the environment variable named by `api_key_env`
and kept only in the session's headers: never logged, cached or written.
If `sampling` has a `seed`, the seed sent is `seed + sample_index`, so the N
samples of one prompt differ on servers that honour seeds.

Stopping. A request is "on the wire" from the moment its bytes may leave (the
send gate, checked after the connection is ready and right before aiohttp
writes) until its outcome is committed. After a quota/billing error or
`stop_sending()`, the gate stays shut: nothing more leaves, queued requests
fail at once (QuotaExceeded / ClientClosed), and requests already on the wire
keep their own outcome, so a reply that was paid for is committed and
delivered. `close(wait_s)` waits up to wait_s for those before giving up on
them (ledger 'abandoned').
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gadx.teacher.cache import Cache, NoCache
from gadx.teacher.errors import (
    BudgetExceeded,
    ClientClosed,
    PermanentError,
    QuotaExceeded,
    RetriesExhausted,
    TeacherError,
)
from gadx.teacher.limiter import Limiter
from gadx.teacher.pricing import Price, price_for
from gadx.teacher.retry import RetryPolicy, classify, ratelimit_reset_s, retry_after_s

KEY_SCHEMA_VERSION = 1
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Sent to the server but not part of the cache key: they do not change the reply.
NOT_IN_KEY = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})
# Handled by the client itself; a caller passing them is a mistake.
FORBIDDEN = frozenset({"stream", "stream_options", "model", "messages", "n", "timeout", "extra_headers", "extra_body"})


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def estimate_tokens(text_chars: int) -> int:
    """Rough token count (~4 chars per token) used to reserve TPM before usage is known."""
    return text_chars // 4 + 1


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish_reason: str | None
    usage: dict[str, Any]  # prompt_tokens, completion_tokens, cached_tokens, total_tokens, estimated
    cached: bool
    cost_usd: float = 0.0
    key: str = ""
    request_id: str | None = None
    attempts: int = 0


class _Paused(Exception):
    """A 429's pause began while this request was connecting: it goes back to wait at the limiter."""


class _NotSent(Exception):
    """The send gate shut while the connection was being set up: nothing was written."""

    def __init__(self, reason: BaseException):
        super().__init__(str(reason))
        self.reason = reason


class _GatedConnector(aiohttp.TCPConnector):
    """Calls `gate()` once the connection is ready: aiohttp writes the request in the same
    event-loop step, so this is the last moment a request can still be held back (setting up
    a connection can take longer than another request's quota error takes to arrive)."""

    def __init__(self, gate, **kw):
        super().__init__(**kw)
        self._gate = gate

    async def connect(self, req, traces, timeout):
        conn = await super().connect(req, traces, timeout)
        try:
            self._gate()
        except BaseException as e:
            conn.release()
            raise _NotSent(e) from None
        return conn


@dataclass(slots=True)
class _Stats:
    submitted: int = 0
    hits: int = 0
    shared: int = 0
    sent: int = 0
    ok: int = 0
    permanent: int = 0
    failed: int = 0
    abandoned: int = 0  # on the wire when the client closed: possibly billed, no reply
    retries: collections.Counter = field(default_factory=collections.Counter)
    http_429: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))


class TeacherClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        cache_path: str | os.PathLike | None,
        api_key_env: str | None = None,
        max_in_flight: int = 64,
        rpm: float | None = None,
        tpm: float | None = None,
        max_usd: float | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        prices: Price | None = None,
        burst_s: float = 2.0,
        default_max_tokens: int = 1024,
        seed: int | None = None,
        cache_endpoint: str | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty string")
        if max_usd is not None and max_usd <= 0:
            raise ValueError(f"max_usd must be positive, got {max_usd}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        headers = {"Content-Type": "application/json"}
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env!r} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.base_url, self.model = base_url.rstrip("/"), model
        self._url = self.base_url + "/chat/completions"
        parts = urlsplit(self._url)
        # The endpoint is part of the cache key; a server on a fresh port each run (the in-process
        # synthetic teacher) names itself with cache_endpoint so a re-run still finds its replies.
        self._endpoint = cache_endpoint or f"{parts.hostname}:{parts.port or ''}{parts.path}"
        self._retry = retry or RetryPolicy()
        self._price = prices if prices is not None else price_for(model)
        self._max_usd = max_usd
        self._default_max_tokens = default_max_tokens
        self._rng = random.Random(seed)
        self._stats = _Stats()
        self._fatal: TeacherError | None = None
        self._stopping = False  # stop_sending(): the send gate is shut, on-wire requests may finish
        self._on_wire: set[asyncio.Task] = set()
        self._tasks: dict[str, asyncio.Task] = {}
        self._failing: dict[str, Any] | None = None  # the current streak of retryable failures
        self._closed = False
        self._reserved_usd = 0.0
        self._inflight: dict[str, list[concurrent.futures.Future]] = {}
        self._submitted: collections.deque = collections.deque()
        self._submit_lock = threading.Lock()
        self._drain_scheduled = False
        self._cache = Cache(str(cache_path)) if cache_path is not None else NoCache()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gadx-teacher", daemon=True)
        self._thread.start()

        async def _open():
            self._limiter = Limiter(max_in_flight, rpm, tpm, burst_s=burst_s)
            self._budget_changed = asyncio.Event()
            connector = _GatedConnector(self._pass_gate, limit=max_in_flight, limit_per_host=0, ttl_dns_cache=300)
            # total=None: a total timeout would count time spent waiting for a pooled connection.
            timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers)

        asyncio.run_coroutine_threadsafe(_open(), self._loop).result()

    def __repr__(self) -> str:
        return f"TeacherClient({self.base_url!r}, {self.model!r}, cache={self._cache.path!r})"

    # -- public API (any thread)
    def submit(self, messages: list[dict[str, Any]], *, sample_index: int = 0, **sampling: Any) -> concurrent.futures.Future:
        """Queue one chat request; the future resolves to a Reply once it is committed.

        Raises ValueError at once on malformed input (nothing is sent)."""
        if self._closed:
            raise ClientClosed("submit() after close()")
        prepared = self._prepare(messages, sample_index, sampling)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        # Submits queue up and one loop callback drains them: one wake-up per burst, not per request.
        with self._submit_lock:
            self._submitted.append((*prepared, fut))
            wake = not self._drain_scheduled
            self._drain_scheduled = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed under us
                raise ClientClosed("submit() after close()") from None
        return fut

    def key(self, messages: list[dict[str, Any]], *, sample_index: int = 0, **sampling: Any) -> str:
        """The cache key `submit` would use; validates like `submit` (ValueError) and sends nothing."""
        return self._prepare(messages, sample_index, sampling)[0]

    def stats(self) -> dict[str, Any]:
        s = self._stats
        lat = sorted(s.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return {
            "submitted": s.submitted,
            "hits": s.hits,
            "shared": s.shared,
            "sent": s.sent,
            "ok": s.ok,
            "permanent_failures": s.permanent,
            "failed": s.failed,
            "in_flight": len(self._inflight),
            "retries": dict(s.retries),
            "http_429": s.http_429,
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "cost_usd": s.cost_usd,
            "gate_wait_s": self._limiter.gate_wait_s,
            "on_wire": len(self._on_wire),
            "abandoned": s.abandoned,
            **self._failing_state(),
            "latency_p50_s": pct(0.5),
            "latency_p90_s": pct(0.9),
            "latency_p99_s": pct(0.99),
        }

    @property
    def reconciled(self) -> int:
        """Requests a killed earlier run left in flight, marked 'lost' in the ledger when this client opened
        the cache (possibly billed, never received; a re-run asks for them again)."""
        return self._cache.reconciled

    def ledger_summary(self) -> dict[str, int]:
        """Ledger rows by event over every run of this cache (see cache.py)."""
        self._cache.flush()
        return self._cache.ledger_summary()

    def on_wire(self) -> int:
        """Requests whose bytes may have left and whose outcome is not committed yet."""
        return len(self._on_wire)

    def stop_sending(self) -> None:
        """Shut the send gate (any thread): nothing more is sent; requests not yet sent fail with
        ClientClosed; requests on the wire finish (their replies are committed and delivered)."""
        if self._stopping or self._closed:
            return
        self._stopping = True
        done = concurrent.futures.Future()

        def stop():
            self._drain()
            self._cancel_unsent(ClientClosed("stopped before the request was sent"))
            done.set_result(None)

        self._loop.call_soon_threadsafe(stop)
        done.result()

    def close(self, wait_s: float = 0.0) -> None:
        """Stop sending, wait up to `wait_s` for the requests on the wire, then give up on the rest
        (their futures fail with ClientClosed; ledger 'abandoned'). Committed replies stay committed.
        A KeyboardInterrupt during the wait ends it early; the client is closed either way."""
        if self._closed:
            return
        try:
            self.stop_sending()
            deadline = time.monotonic() + wait_s
            while self._on_wire and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            self._closed = True

            async def _shutdown():
                self._drain()  # fails whatever was submitted but not yet dispatched
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for waiters in list(self._inflight.values()):
                    self._resolve(waiters, exc=ClientClosed("client closed before the reply arrived"))
                self._inflight.clear()
                await self._session.close()

            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            self._cache.close()

    def __enter__(self) -> "TeacherClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- request preparation (caller's thread)
    def _prepare(self, messages: Any, sample_index: int, sampling: dict[str, Any]) -> tuple[str, str, bytes, int, int]:
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"messages must be a non-empty list of dicts, got {messages!r:.200}")
        chars = 0
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                raise ValueError(f"messages[{i}] must be a dict with role in {sorted(ROLES)}, got {m!r:.200}")
            content = m.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list) or (content is None and m["role"] == "assistant"):
                chars += len(json.dumps(content))
            else:
                raise ValueError(f"messages[{i}].content must be a string or a list of parts, got {content!r:.200}")
        if not isinstance(sample_index, int) or isinstance(sample_index, bool) or sample_index < 0:
            raise ValueError(f"sample_index must be an int >= 0, got {sample_index!r}")
        bad = FORBIDDEN & sampling.keys()
        if bad:
            raise ValueError(f"sampling must not set {sorted(bad)} (use sample_index for several samples)")
        sampling = {k: v for k, v in sampling.items() if v is not None}
        max_tokens = sampling.get("max_completion_tokens", sampling.get("max_tokens", self._default_max_tokens))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        sent = dict(sampling)
        if "seed" in sent:
            if not isinstance(sent["seed"], int):
                raise ValueError(f"seed must be an int, got {sent['seed']!r}")
            sent["seed"] += sample_index
        try:
            # Serialising both now is the deep copy: later mutation of `messages` changes nothing.
            request = canonical_json({
                "v": KEY_SCHEMA_VERSION,
                "endpoint": self._endpoint,
                "model": self.model,
                "messages": messages,
                "sampling": {k: v for k, v in sampling.items() if k not in NOT_IN_KEY},
                "sample_index": sample_index,
            })
            body = json.dumps({"model": self.model, "messages": messages, **sent}, allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ValueError(f"request is not JSON-serialisable without NaN/inf: {e}") from None
        key = hashlib.sha256(request.encode()).hexdigest()
        return key, request, body, estimate_tokens(chars) + 4 * len(messages), max_tokens

    # -- event loop side
    def _drain(self) -> None:
        with self._submit_lock:
            items = list(self._submitted)
            self._submitted.clear()
            self._drain_scheduled = False
        for item in items:
            self._dispatch(*item)

    def _dispatch(self, key: str, request: str, body: bytes, est_prompt: int, max_tokens: int,
                  fut: concurrent.futures.Future) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        self._stats.submitted += 1
        if self._closed:
            fut.set_exception(ClientClosed("client closed before the request was sent"))
            return
        if self._fatal is not None:
            fut.set_exception(self._fatal)
            return
        waiters = self._inflight.get(key)
        if waiters is not None:  # identical request already in flight: share its call
            self._stats.shared += 1
            waiters.append(fut)
            return
        row = self._cache.get(key)
        if row is not None:
            self._stats.hits += 1
            if row["request"] != request:
                fut.set_exception(TeacherError(f"cache row {key} holds a different request: the cache file is corrupt"))
            elif row["status"] == "ok":
                fut.set_result(_reply_from_row(row, cached=True))
            else:
                fut.set_exception(PermanentError(row["http_status"] or 0, row["error"] or "", cached=True))
            return
        if self._stopping:  # a cache hit is still served above; nothing new is fetched
            fut.set_exception(ClientClosed("stopped before the request was sent"))
            return
        self._inflight[key] = [fut]
        self._tasks[key] = self._loop.create_task(self._fetch(key, request, body, est_prompt, max_tokens))

    @staticmethod
    def _resolve(waiters: list[concurrent.futures.Future], result: Any = None, exc: BaseException | None = None) -> None:
        for w in waiters:
            if not w.done():
                w.set_exception(exc) if exc is not None else w.set_result(result)

    # -- the send gate and stopping (event loop side)
    def _pass_gate(self) -> None:
        """Raise if nothing may be sent now; else mark the current task as on the wire. Called by the
        connector in the same loop step in which aiohttp writes the request."""
        if self._fatal is not None:
            raise self._fatal
        if self._stopping or self._closed:
            raise ClientClosed("stopped before the request was sent")
        if self._limiter.pause_until > self._limiter.clock():  # the 429 gate is global, late arrivals included
            raise _Paused("a 429 pause began while it was connecting")
        self._on_wire.add(asyncio.current_task())
        self._stats.sent += 1

    def _check_stop(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._stopping or self._closed:
            raise ClientClosed("stopped before the request was sent")

    def _cancel_unsent(self, exc: TeacherError) -> None:
        """Fail and cancel every request that is not on the wire; on-wire ones keep their outcome."""
        current = asyncio.current_task()
        for key, task in list(self._tasks.items()):
            if task is current or task in self._on_wire:
                continue
            self._resolve(self._inflight.pop(key, []), exc=exc)
            task.cancel()

    def _note_failure(self, what: str, retry_in_s: float) -> None:
        now = time.time()
        since = self._failing["since"] if self._failing else now
        count = self._failing["count"] + 1 if self._failing else 1
        self._failing = {"what": what, "since": since, "count": count, "next_retry": now + retry_in_s}

    def _failing_state(self) -> dict[str, Any]:
        """What keeps failing, since when (epoch s), how often, and when the next retry goes (epoch s)."""
        f = self._failing
        if f is None:
            return {"failing": None, "failing_since": None, "failures": 0, "next_retry": None}
        return {"failing": f["what"], "failing_since": f["since"], "failures": f["count"], "next_retry": f["next_retry"]}

    async def _fetch(self, key: str, request: str, body: bytes, est_prompt: int, max_tokens: int) -> None:
        try:
            reply = await self._attempts(key, request, body, est_prompt, max_tokens)
        except BaseException as e:  # noqa: BLE001 -- every outcome must reach the waiters
            if isinstance(e, PermanentError):
                self._stats.permanent += 1
            else:
                self._stats.failed += 1
            exc = e if isinstance(e, Exception) else ClientClosed("client closed before the reply arrived")
            self._resolve(self._inflight.pop(key, []), exc=exc)
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self._tasks.pop(key, None)
            self._on_wire.discard(asyncio.current_task())
        self._resolve(self._inflight.pop(key, []), result=reply)

    async def _reserve_budget(self, est_usd: float) -> None:
        if self._max_usd is None:
            return
        while self._stats.cost_usd + self._reserved_usd + est_usd > self._max_usd:
            if self._reserved_usd <= 0:
                raise BudgetExceeded(
                    f"spent ${self._stats.cost_usd:.4f}; this request may cost ${est_usd:.4f}; max_usd={self._max_usd}"
                )
            self._budget_changed.clear()
            await self._budget_changed.wait()
        self._reserved_usd += est_usd

    def _release_budget(self, est_usd: float) -> None:
        if self._max_usd is not None:
            self._reserved_usd -= est_usd
            self._budget_changed.set()

    async def _post(self, key: str, attempt: int, body: bytes) -> tuple[int | None, bytes, Any, BaseException | None]:
        """One HTTP attempt: (status, raw body, headers, connection error or None)."""
        try:
            async with self._session.post(self._url, data=body, headers={"X-Gadx-Key": key}) as resp:
                return resp.status, await resp.read(), resp.headers, None
        except _NotSent as e:  # the gate shut while connecting: no byte left
            self._cache.ledger(key, attempt, "not_sent", detail=str(e.reason))
            raise e.reason from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            return None, b"", {}, e
        except asyncio.CancelledError:
            on_wire = asyncio.current_task() in self._on_wire
            self._stats.abandoned += on_wire
            self._cache.ledger(key, attempt, "abandoned" if on_wire else "not_sent",
                               detail="the client closed while waiting for the reply" if on_wire else "closed")
            raise

    async def _attempts(self, key: str, request: str, body: bytes, est_prompt: int, max_tokens: int) -> Reply:
        policy, rng = self._retry, self._rng
        t_submit = time.monotonic()
        deadline = math.inf  # per request, counted from its first send (not from time spent queued)
        tries = collections.Counter()
        est_tokens = est_prompt + max_tokens
        est_usd = self._price.cost(est_prompt, max_tokens)
        attempt = 0
        task = asyncio.current_task()
        while True:
            self._check_stop()
            await self._reserve_budget(est_usd)
            try:
                slot = await self._limiter.acquire(est_tokens)
                used: int | None = 0
                try:
                    self._check_stop()
                    attempt += 1
                    if attempt == 1 and policy.deadline_s is not None:
                        deadline = time.monotonic() + policy.deadline_s
                    # On disk before a byte can leave: after a SIGKILL the ledger still knows this may be billed.
                    await _committed(self._cache.ledger(key, attempt, "send"))
                    try:
                        status, raw, headers, exc = await self._post(key, attempt, body)
                    except _Paused:
                        continue  # nothing left (ledger 'not_sent'); the slot and budget are released below
                    out = classify(status, raw, exc)
                    usage = _usage(out.usage) if out.kind == "ok" else None
                    # Refund to reported usage; a lost connection may have been counted in full.
                    used = None if out.kind == "server" else (usage["total_tokens"] if usage else 0)
                finally:
                    self._limiter.release(slot, used)
            finally:
                self._release_budget(est_usd)

            try:  # still on the wire until the outcome is committed
                if out.kind == "ok":
                    return await self._commit_ok(key, request, attempt, status, raw, headers, out, usage,
                                                 est_prompt, est_tokens, t_submit)
                # A malformed 200 was probably billed: keep its bytes in the ledger.
                detail = out.message if out.kind != "malformed" else f"{out.message}: {raw[:4000].decode('utf-8', 'replace')}"
                self._cache.ledger(key, attempt, out.kind, http_status=status, detail=detail)
                if out.kind == "permanent":
                    await _committed(self._cache.put({
                        "key": key, "request": request, "status": "permanent_fail", "http_status": status or 200,
                        "error": out.message, "attempts": attempt, "raw": raw,
                    }))
                    raise PermanentError(status or 200, out.message)
            finally:
                self._on_wire.discard(task)
            if out.kind == "quota":
                if self._fatal is None:
                    self._fatal = QuotaExceeded(f"{self._url}: the teacher API refused for quota/billing: {out.message}")
                    self._failing = {"what": f"quota: {out.message}", "since": time.time(), "count": 1,
                                     "next_retry": None}
                    self._cancel_unsent(self._fatal)  # queued requests fail now; on-wire ones keep their outcome
                raise self._fatal

            if out.kind == "rate":
                self._stats.http_429 += 1
            budget = {"rate": policy.max_rate_retries, "server": policy.max_server_retries,
                      "malformed": policy.max_malformed_retries}[out.kind]
            what = {"rate": "HTTP 429 rate limit", "server": "server error", "malformed": "malformed reply"}[out.kind]
            if tries[out.kind] >= budget:
                raise RetriesExhausted(f"{self._url}: {what}: retry budget ({budget}) spent; last error: {out.message}")
            self._stats.retries[out.kind] += 1
            delay = policy.backoff(tries[out.kind], rng)
            tries[out.kind] += 1
            hint = retry_after_s(headers) if headers else None
            if out.kind == "rate":
                reset = ratelimit_reset_s(headers, est_tokens) if headers else None
                wait = max(delay, hint or 0.0, reset or 0.0)
                self._limiter.on_rate_limited()
                self._limiter.pause(wait)  # everyone waits, not just this request
            else:
                wait = max(delay, hint or 0.0)
            if time.monotonic() + wait > deadline:
                raise RetriesExhausted(f"{self._url}: {what}: deadline ({policy.deadline_s} s) passed; "
                                       f"last error: {out.message}")
            self._note_failure(f"{what}: {out.message}"[:200], wait)
            await asyncio.sleep(wait)

    async def _commit_ok(self, key, request, attempt, status, raw, headers, out, usage, est_prompt, est_tokens,
                         t_submit) -> Reply:
        if not usage["prompt_tokens"] and not usage["completion_tokens"]:
            usage = {**usage, "prompt_tokens": est_prompt, "completion_tokens": estimate_tokens(len(out.text)),
                     "estimated": True}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cost = self._price.cost(usage["prompt_tokens"], usage["completion_tokens"], usage["cached_tokens"])
        self._limiter.on_success()
        if (reset := ratelimit_reset_s(headers, est_tokens)) is not None:
            self._limiter.pause(reset)  # the server says its window is spent: wait before the next send
        self._stats.prompt_tokens += usage["prompt_tokens"]
        self._stats.completion_tokens += usage["completion_tokens"]
        self._stats.cost_usd += cost
        self._cache.ledger(key, attempt, "ok", http_status=status, prompt_tokens=usage["prompt_tokens"],
                           completion_tokens=usage["completion_tokens"], cost_usd=cost)
        await _committed(self._cache.put({
            "key": key, "request": request, "status": "ok", "text": out.text,
            "finish_reason": out.finish_reason, "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"], "cached_tokens": usage["cached_tokens"],
            "usage_estimated": int(usage["estimated"]), "cost_usd": cost, "http_status": status,
            "request_id": out.request_id, "attempts": attempt, "raw": raw,
        }))
        self._stats.ok += 1
        if self._fatal is None:
            self._failing = None
        self._stats.latencies.append(time.monotonic() - t_submit)
        return Reply(out.text, out.finish_reason, usage, False, cost, key, out.request_id, attempt)


async def _committed(fut: concurrent.futures.Future) -> None:
    if not fut.done():  # NoCache's futures are done already: skip a thread-safe wake-up
        # shield: cancelling the waiting task must not cancel the cache's future (its writer resolves it)
        await asyncio.shield(asyncio.wrap_future(fut))
    fut.result()


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    def as_int(v: Any) -> int:
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0

    prompt, completion = as_int(u.get("prompt_tokens")), as_int(u.get("completion_tokens"))
    details = u.get("prompt_tokens_details") or {}
    cached = as_int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached,
            "total_tokens": prompt + completion, "estimated": False}


def _reply_from_row(row: Any, *, cached: bool) -> Reply:
    usage = {"prompt_tokens": row["prompt_tokens"] or 0, "completion_tokens": row["completion_tokens"] or 0,
             "cached_tokens": row["cached_tokens"] or 0, "estimated": bool(row["usage_estimated"])}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return Reply(row["text"], row["finish_reason"], usage, cached, row["cost_usd"], row["key"], row["request_id"],
                 row["attempts"])
