"""Persistent reply cache: SQLite in WAL mode, synchronous=FULL, one writer thread.

Every paid reply is committed (with its raw bytes) before the future that waits
for it resolves, so a crash at any point loses nothing acknowledged, and a
re-run finds every committed key. Writes are group-committed: the writer drains
everything queued, runs it in one transaction, then resolves the waiters.

Tables
  responses  key -> canonical request, status (ok | permanent_fail), text,
             finish_reason, usage, cost, request id, attempts, raw bytes, time
  ledger     append-only, one row per possibly-billed attempt: 'send' (committed
             before the request can leave), then its outcome: ok, permanent,
             quota, rate, server, malformed (the server answered), not_sent (the
             client stopped before any byte left), abandoned (the client gave up
             waiting for the reply on close), lost (see reconciliation).
  runs       one row per client that opened the cache: pid, host, start, end.

Reconciliation: a process killed with SIGKILL leaves 'send' rows with no outcome:
requests that reached the server (so may be billed) whose reply never came back
or was never committed. When a cache is opened, every such send of a run that
ended without closing (its pid is gone on this host) gets a 'lost' row, once;
`Cache.reconciled` counts them for this open and `ledger_summary()` over all
runs. Their keys have no committed reply, so a re-run asks for them again: a
lost request is paid at most twice, a committed one exactly once.

    cache = Cache("teacher.sqlite")
    row = cache.get(key)                     # any thread; None on a miss
    cache.put(row_dict).result()             # blocks until committed
    cache.close()
"""
from __future__ import annotations

import concurrent.futures
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    usage_estimated INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    http_status INTEGER,
    error TEXT,
    request_id TEXT,
    attempts INTEGER NOT NULL,
    raw BLOB,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    event TEXT NOT NULL,
    http_status INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    detail TEXT,
    t REAL NOT NULL,
    run TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    end_reason TEXT
);
"""
# Outcome events: the request's fate is known. A 'send' without one is still in flight (or was, at a kill).
OUTCOMES = ("ok", "permanent", "quota", "rate", "server", "malformed", "not_sent", "abandoned", "lost")

RESPONSE_COLUMNS = (
    "key", "request", "status", "text", "finish_reason", "prompt_tokens", "completion_tokens",
    "cached_tokens", "usage_estimated", "cost_usd", "http_status", "error", "request_id", "attempts",
    "raw", "created",
)
LEDGER_COLUMNS = ("key", "attempt", "event", "http_status", "prompt_tokens", "completion_tokens", "cost_usd", "detail", "t",
                  "run")

_INSERT_RESPONSE = (
    f"INSERT OR REPLACE INTO responses ({','.join(RESPONSE_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(RESPONSE_COLUMNS))})"
)
_INSERT_LEDGER = f"INSERT INTO ledger ({','.join(LEDGER_COLUMNS)}) VALUES ({','.join('?' * len(LEDGER_COLUMNS))})"


def _connect(path: str, deadline_s: float = 60.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=deadline_s)
    # Switching a new file to WAL while another process (a trainer's other rank) does the same can
    # fail at once with "database is locked": SQLite skips the busy handler there. Retry instead.
    t_end, wait = time.monotonic() + deadline_s, 0.01
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > t_end:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 0.5)
    conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    return conn


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _reconcile(conn: sqlite3.Connection, host: str) -> int:
    """Mark the unanswered sends of dead runs on this host 'lost'; returns how many (see module doc)."""
    conn.execute("BEGIN IMMEDIATE")  # two processes opening at once reconcile a dead run only once
    try:
        dead = [run for run, pid in conn.execute("SELECT run, pid FROM runs WHERE ended IS NULL AND host = ?", (host,))
                if not _pid_alive(pid)]
        n = 0
        now = time.time()
        for run in dead:
            orphans = conn.execute(
                "SELECT key, attempt FROM ledger s WHERE run = ? AND event = 'send' AND NOT EXISTS ("
                " SELECT 1 FROM ledger o WHERE o.run = s.run AND o.key = s.key AND o.attempt = s.attempt"
                " AND o.event != 'send')", (run,)).fetchall()
            conn.executemany(
                _INSERT_LEDGER,
                [(k, a, "lost", None, None, None, None,
                  "in flight when its process died: possibly billed, reply never received", now, run)
                 for k, a in orphans])
            conn.execute("UPDATE runs SET ended = ?, end_reason = 'killed' WHERE run = ?", (now, run))
            n += len(orphans)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return n


class Cache:
    def __init__(self, path: str):
        self.path = str(path)
        self.run = uuid.uuid4().hex[:16]
        host = socket.gethostname()
        conn = _connect(self.path)
        conn.executescript(SCHEMA)
        if "run" not in {r[1] for r in conn.execute("PRAGMA table_info(ledger)")}:  # a cache from before runs
            try:
                conn.execute("ALTER TABLE ledger ADD COLUMN run TEXT")
            except sqlite3.OperationalError as e:  # another process added it first
                if "duplicate column" not in str(e):
                    raise
        conn.execute("CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run, key, attempt)")
        self.reconciled = _reconcile(conn, host)
        conn.execute("INSERT INTO runs (run, pid, host, started) VALUES (?, ?, ?, ?)",
                     (self.run, os.getpid(), host, time.time()))
        conn.close()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="gadx-teacher-cache", daemon=True)
        self._writer.start()

    # -- reads (any thread, one connection per thread; WAL lets them run beside the writer)
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def get(self, key: str) -> sqlite3.Row | None:
        return self._reader().execute("SELECT * FROM responses WHERE key = ?", (key,)).fetchone()

    def count(self) -> int:
        return self._reader().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    # -- writes (queued to the single writer)
    def put(self, row: dict[str, Any]) -> concurrent.futures.Future:
        """Queue a response row; the future resolves once it is committed."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        values = tuple(row.get(c) for c in RESPONSE_COLUMNS[:-1]) + (row.get("created") or time.time(),)
        self._q.put((_INSERT_RESPONSE, values, fut))
        return fut

    def ledger(self, key: str, attempt: int, event: str, **fields: Any) -> concurrent.futures.Future:
        """Append a ledger row, committed with the next group; the future resolves once it is
        (callers that need it on disk, like 'send', wait for it)."""
        fields.update(key=key, attempt=attempt, event=event, t=time.time(), run=self.run)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put((_INSERT_LEDGER, tuple(fields.get(c) for c in LEDGER_COLUMNS), fut))
        return fut

    def ledger_summary(self) -> dict[str, int]:
        """Ledger rows by event over every run (sends, answers, not_sent, abandoned, lost, ...)."""
        return dict(self._reader().execute("SELECT event, COUNT(*) FROM ledger GROUP BY event").fetchall())

    def flush(self) -> None:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put((None, None, fut))
        fut.result()

    def _write_loop(self) -> None:
        conn = _connect(self.path)
        while True:
            items = [self._q.get()]
            try:
                while len(items) < 4096:
                    items.append(self._q.get_nowait())
            except queue.Empty:
                pass
            stop = any(sql == "STOP" for sql, _, _ in items)
            try:
                conn.execute("BEGIN")
                for sql, values, _ in items:
                    if sql is not None and sql != "STOP":
                        conn.execute(sql, values)
                conn.execute("COMMIT")
                error = None
            except sqlite3.Error as e:  # disk full, I/O error: every waiter must hear about it
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                error = e
            for _, _, fut in items:
                # A waiter may have given up (cancelled its future); the row is committed all the same,
                # and the writer must live on for everyone else.
                if fut is not None and fut.set_running_or_notify_cancel():
                    fut.set_exception(error) if error is not None else fut.set_result(None)
            if stop:
                conn.close()
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(("UPDATE runs SET ended = ?, end_reason = 'closed' WHERE run = ?", (time.time(), self.run), None))
        self._q.put(("STOP", None, None))
        self._writer.join()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


class NoCache:
    """Stands in for `Cache` when cache_path=None (benchmarks, throwaway runs): nothing persists."""

    path = None

    def get(self, key: str) -> None:
        return None

    def count(self) -> int:
        return 0

    def put(self, row: dict[str, Any]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_result(None)
        return fut

    reconciled = 0

    def ledger(self, key: str, attempt: int, event: str, **fields: Any) -> concurrent.futures.Future:
        return self.put({})

    def ledger_summary(self) -> dict[str, int]:
        return {}

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
