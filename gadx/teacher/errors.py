"""Errors a teacher future can raise.

`PermanentError` is per request (the server refused this input: context length,
bad request, auth); it is committed to the cache so a re-run does not pay for it
again. `QuotaExceeded` and `BudgetExceeded` are fatal: every pending request
fails with them and the client accepts no more work. `RetriesExhausted` is not
cached: running again retries the request.
"""
from __future__ import annotations


class TeacherError(Exception):
    """Base class for every error a teacher future can raise."""


class PermanentError(TeacherError):
    """The server rejected this request with a non-retryable status (400/401/403/404/422)."""

    def __init__(self, status: int, message: str, *, cached: bool = False):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.cached = cached


class RetriesExhausted(TeacherError):
    """A retry budget or the per-request deadline ran out; the request is not cached."""


class QuotaExceeded(TeacherError):
    """429 insufficient_quota / billing error: the account cannot pay, so everything stops."""


class BudgetExceeded(TeacherError):
    """Spending this request could pass max_usd."""


class ClientClosed(TeacherError):
    """The client was closed before the request finished."""
