"""What to do with one attempt's outcome, and how long to wait before the next.

`classify(status, raw, exc)` turns an HTTP attempt into an `Outcome`:
  ok         a well-formed reply (text, finish_reason, usage)
  permanent  400/401/403/404/422 (and content-filtered null content): never retried
  quota      429 insufficient_quota / billing: stop everything
  rate       429 rate limit: wait for the server's hint, retry (rate budget)
  server     connection errors, timeouts, 408/409/5xx/529: retry (server budget)
  malformed  a 200 that does not parse or lacks choices/content: retry (malformed budget)
Delays are max(server hint, full-jitter backoff), backoff = U(0, min(cap, base * 2**n)).
"""
from __future__ import annotations

import email.utils
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

PERMANENT_STATUS = frozenset({400, 401, 403, 404, 422})
RETRY_STATUS = frozenset({408, 409, 500, 502, 503, 504, 529})
QUOTA_CODES = ("insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "quota_exceeded")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_rate_retries: int = 30  # 429s: the server is alive, just busy
    max_server_retries: int = 6  # 5xx, timeouts, connection errors
    max_malformed_retries: int = 2  # paid-for 200s that did not parse
    base_s: float = 0.5
    cap_s: float = 60.0
    deadline_s: float | None = 3600.0  # per request, from submit to the last attempt's start

    def backoff(self, n: int, rng: random.Random) -> float:
        """Full-jitter delay before retry number n (0-based)."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2.0**n)))


@dataclass(slots=True)
class Outcome:
    kind: str  # ok | permanent | quota | rate | server | malformed
    message: str = ""
    text: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


def _error_message(raw: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI-style error body, or a clipped raw body (HTML pages etc.)."""
    try:
        err = json.loads(raw).get("error") or {}
        if isinstance(err, dict):
            return str(err.get("message") or ""), str(err.get("code") or err.get("type") or "")
        return str(err), ""
    except (ValueError, AttributeError):
        text = raw[:300].decode("utf-8", "replace").strip()
        return re.sub(r"\s+", " ", text), ""


def classify(status: int | None, raw: bytes, exc: BaseException | None) -> Outcome:
    if exc is not None:
        return Outcome("server", f"{type(exc).__name__}: {exc}")
    assert status is not None
    if status == 429:
        message, code = _error_message(raw)
        if any(q in code or q in message for q in QUOTA_CODES):
            return Outcome("quota", message or code)
        return Outcome("rate", message)
    if status in PERMANENT_STATUS:
        return Outcome("permanent", _error_message(raw)[0] or f"HTTP {status}")
    if status != 200:
        # Unknown statuses (and RETRY_STATUS) are retried with the server budget.
        return Outcome("server", f"HTTP {status}: {_error_message(raw)[0]}")
    return parse_reply(raw)


def parse_reply(raw: bytes) -> Outcome:
    try:
        body = json.loads(raw)
    except ValueError as e:
        return Outcome("malformed", f"invalid JSON ({e}) in {len(raw)} bytes")
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return Outcome("malformed", "reply has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    finish = choice.get("finish_reason")
    if not isinstance(text, str):
        if finish == "content_filter" or (isinstance(message, dict) and message.get("refusal")):
            return Outcome("permanent", f"no content (finish_reason={finish}, refusal={message.get('refusal')!r})")
        return Outcome("malformed", f"reply content is {type(text).__name__}")
    usage = body.get("usage")
    return Outcome(
        "ok",
        text=text,
        finish_reason=finish,
        usage=usage if isinstance(usage, dict) else {},
        request_id=body.get("id"),
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float | None:
    """OpenAI x-ratelimit-reset-* values: "20ms", "1.5s", "6m0s", "1h2m3s"; a bare number is seconds."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, retry-after (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    # Dates have 1 s resolution; round the wait up so we never come back early.
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def ratelimit_reset_s(headers: Mapping[str, str], tokens_needed: int = 0) -> float | None:
    """Time until the server's window resets, when its x-ratelimit-remaining says we are out."""
    waits = []
    for kind, needed in (("requests", 1), ("tokens", max(tokens_needed, 1))):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if remaining is None or reset is None:
            continue
        try:
            out = float(remaining) < needed
        except ValueError:
            continue
        if out and (d := parse_duration(reset)) is not None:
            waits.append(d)
    return max(waits) if waits else None
