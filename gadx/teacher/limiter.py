"""Admission control for teacher requests, in the order a request meets it:

1. an in-flight semaphore (the knob that matters for self-hosted servers),
2. a global gate, closed until a 429's Retry-After / x-ratelimit reset time,
3. request and token buckets (continuous refill, a burst of `burst_s` seconds).

Tokens are reserved from an estimate (prompt + max_tokens) and refunded to the
reported usage once the reply arrives. A 429 cuts the bucket rates
multiplicatively; every success restores a little. `clock` and `sleep` are
injectable so tests can drive time by hand.

    lim = Limiter(max_in_flight=64, rpm=500, tpm=200_000)
    slot = await lim.acquire(est_tokens)
    try: ...  # send
    finally: lim.release(slot, used_tokens)
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable


class TokenBucket:
    """Continuous-refill bucket. Starts empty so that a strict sliding-window server
    never sees an opening burst above its rate."""

    def __init__(self, rate_per_s: float, burst_s: float, clock: Callable[[], float]):
        if rate_per_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        self.base_rate = self.rate = rate_per_s
        self.burst_s = burst_s
        self.level = 0.0
        self._clock = clock
        self._t = clock()

    @property
    def capacity(self) -> float:
        return max(self.rate * self.burst_s, 1.0)

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        self._t = now

    def wait_s(self, n: float) -> float:
        """Seconds until `n` can be taken; a request bigger than the burst waits for a
        full bucket and then runs it into debt."""
        self._refill()
        need = min(n, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, n: float) -> None:
        self.level -= n

    def give(self, n: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + n)

    def slow_down(self, factor: float = 0.7) -> None:
        self._refill()
        self.rate = max(self.base_rate * 0.1, self.rate * factor)

    def speed_up(self, step: float = 0.02) -> None:
        if self.rate < self.base_rate:
            self._refill()
            self.rate = min(self.base_rate, self.rate + self.base_rate * step)


@dataclass(slots=True)
class Slot:
    tokens: int  # reserved from the token bucket


class Limiter:
    def __init__(
        self,
        max_in_flight: int = 64,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if burst_s <= 0:
            raise ValueError(f"burst_s must be positive, got {burst_s}")
        self.max_in_flight = max_in_flight
        self._sem = asyncio.Semaphore(max_in_flight)
        self._lock = asyncio.Lock()  # FIFO through gate and buckets
        self._clock, self._sleep = clock, sleep
        self.clock = clock
        self.requests = TokenBucket(rpm / 60.0, burst_s, clock) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0, burst_s, clock) if tpm else None
        self.pause_until = float("-inf")
        self.in_flight = 0
        self.gate_wait_s = 0.0  # total time spent behind a closed gate

    def _wait_s(self, tokens: int) -> float:
        gate = self.pause_until - self._clock()
        if gate > 0:
            return gate
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.wait_s(1))
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_s(tokens))
        return wait

    async def acquire(self, tokens: int) -> Slot:
        await self._sem.acquire()
        try:
            if self.requests is not None or self.tokens is not None or self.pause_until > self._clock():
                async with self._lock:
                    while (wait := self._wait_s(tokens)) > 0:
                        if self.pause_until > self._clock():
                            self.gate_wait_s += wait
                        await self._sleep(wait)
                    if self.requests is not None:
                        self.requests.take(1)
                    if self.tokens is not None:
                        self.tokens.take(tokens)
        except BaseException:
            self._sem.release()
            raise
        self.in_flight += 1
        return Slot(tokens)

    def release(self, slot: Slot, used_tokens: int | None) -> None:
        """Return the slot; refund the token reservation down to `used_tokens`
        (None: unknown, keep the whole reservation)."""
        self.in_flight -= 1
        self._sem.release()
        if self.tokens is not None and used_tokens is not None:
            self.tokens.give(slot.tokens - used_tokens)

    def pause(self, seconds: float) -> None:
        """Close the gate for everyone for `seconds` (a 429's Retry-After or a window reset)."""
        self.pause_until = max(self.pause_until, self._clock() + seconds)

    def on_rate_limited(self) -> None:
        for b in (self.requests, self.tokens):
            if b is not None:
                b.slow_down()

    def on_success(self) -> None:
        for b in (self.requests, self.tokens):
            if b is not None:
                b.speed_up()
