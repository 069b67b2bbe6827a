"""Prompt data: JSONL or Parquet, with or without teacher replies, and a resumable batch cursor.

Accepted columns (auto-detected unless data.prompt_key / data.response_key say):
- ``messages``: a chat message list (the last assistant turn, if any, is the reply)
- ``content``: the paper's released parquet (message list) with ``teacher_response``
- ``prompt``: plain text, becomes one user message
Replies: ``teacher_response`` or ``response``; absent -> asked from the teacher.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    messages: list[dict[str, str]]
    reply: str | None = None  # a teacher reply from the file, if any
    meta: dict[str, Any] | None = None


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        rows = []
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: bad JSON ({e})") from None
        return rows
    raise ValueError(f"{path}: unsupported data file (expected .jsonl or .parquet)")


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise ValueError(f"{where}: expected a string or a list of {{role, content}} messages, got {type(value).__name__}")


def load_samples(path: str | Path, *, prompt_key: str = "", response_key: str = "", limit: int = 0) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} not found")
    rows = _rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    keys = rows[0].keys()
    pk = prompt_key or next((k for k in ("messages", "content", "prompt") if k in keys), "")
    if pk not in keys:
        raise ValueError(f"{path}: no prompt column (looked for {prompt_key or 'messages/content/prompt'}; have {sorted(keys)})")
    rk = response_key or next((k for k in ("teacher_response", "response") if k in keys), "")
    if response_key and rk not in keys:
        raise ValueError(f"{path}: no response column {response_key!r}; have {sorted(keys)}")
    out = []
    for n, row in enumerate(rows[: limit or None]):
        msgs = _messages(row[pk], f"{path} row {n} column {pk!r}")
        reply = row.get(rk) if rk else None
        if reply is None and msgs and msgs[-1]["role"] == "assistant":
            msgs, reply = msgs[:-1], msgs[-1]["content"]
        out.append(Sample(msgs, reply))
    return out


class Cursor:
    """Deterministic, resumable walk over shuffled epochs: ``next(k)`` -> k indices; ``state`` round-trips."""

    def __init__(self, n: int, seed: int):
        assert n > 0
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def next(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            take = min(k - len(out), self.n - self.pos)
            out += self._order[self.pos : self.pos + take]
            self.pos += take
        return out

    @property
    def state(self) -> dict[str, int]:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    @classmethod
    def from_state(cls, st: dict[str, int]) -> "Cursor":
        c = cls(st["n"], st["seed"])
        c.epoch, c.pos = st["epoch"], st["pos"]
        c._order = c._perm()
        return c
