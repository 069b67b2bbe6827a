"""Teacher client: the black-box chat-completions API behind GAD.

    from gadx.teacher import TeacherClient, Prefetcher
    with TeacherClient(base_url, model, cache_path="teacher.sqlite", api_key_env="OPENAI_API_KEY") as t:
        reply = t.submit(messages, temperature=1.0, max_tokens=512).result()

See client.py (submit/futures), cache.py (SQLite WAL cache + ledger),
limiter.py (in-flight cap, 429 gate, RPM/TPM buckets), retry.py (what is
retried and how long to wait), pricing.py (cost), prefetch.py (k batches ahead).
"""
from gadx.teacher.client import Reply, TeacherClient
from gadx.teacher.errors import (
    BudgetExceeded,
    ClientClosed,
    PermanentError,
    QuotaExceeded,
    RetriesExhausted,
    TeacherError,
)
from gadx.teacher.limiter import Limiter, TokenBucket
from gadx.teacher.prefetch import Prefetcher
from gadx.teacher.pricing import Price, price_for
from gadx.teacher.retry import RetryPolicy

__all__ = [
    "BudgetExceeded", "ClientClosed", "Limiter", "PermanentError", "Prefetcher", "Price", "QuotaExceeded",
    "Reply", "RetriesExhausted", "RetryPolicy", "TeacherClient", "TeacherError", "TokenBucket", "price_for",
]
