"""Metrics: one JSON line per logged step (metrics.jsonl), TensorBoard, optional W&B, a progress bar.

    log = MetricsLogger(out_dir, enabled=rank == 0, tensorboard=True, resume_step=40)   # drops rows >= 40
    log.log(step, {"stage": "gad", "loss/g": 0.31, ...})    # floats or 0-d tensors
    log.close()

Values may be 0-d tensors: they are converted only here, once per logged step,
so the step itself never syncs with the host. Non-finite numbers are written as JSON
``null`` (JSON has no nan/inf; a string would break readers). A resumed run replays the
steps after its checkpoint: ``resume_step`` drops the rows it will write again, so the
file holds each step once (no doubled-back curves).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.detach().float().item() if v.numel() == 1 else v.detach().float().tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no nan/inf
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def drop_rows_from(path: Path, step: int) -> int:
    """Rewrite ``path`` (atomically) without rows of step >= ``step``; returns how many were dropped."""
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill mid-write
            dropped += 1
            continue
        if isinstance(row.get("step"), int) and row["step"] >= step:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        tmp.replace(path)
    return dropped


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, wandb: bool = False,
                 config: dict | None = None, resume_step: int = 0):
        self.enabled = enabled
        self._tb = self._wb = None
        self.path = Path(out_dir) / "metrics.jsonl"
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_rows_from(self.path, resume_step)  # also a fresh start (0) into an old file: no stale rows
        self._f = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides the events a resumed run writes again
                self._tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=resume_step or None)
            except ImportError:
                print("metrics: tensorboard not installed; logging JSONL only", file=sys.stderr)
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                print("metrics: run.wandb=true but wandb is not installed; skipping W&B", file=sys.stderr)
            else:
                self._wb = wb.init(project="gadx", dir=str(out_dir), config=config)

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        row = {"step": step, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
        if not self.enabled:
            return row
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time"):
                if self._tb is not None:
                    self._tb.add_scalar(k, v, step)
        if self._wb is not None:
            self._wb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        return row

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wb is not None:
            self._wb.finish()


class Progress:
    """A progress bar with ETA on stderr (rank 0 only); a no-op when disabled.

    On a terminal it redraws one line in place. When stderr is a file or a pipe (a cluster's
    job log) it prints a plain line every ``log_interval_s`` seconds and at the end instead:
    no carriage returns or ANSI codes piling up in the log."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream=None, log_interval_s: float = 5.0):
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.stream = stream
        self.start = time.monotonic()
        self.n = 0
        self.log_interval_s = log_interval_s
        self._last_line = -float("inf")

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if not self.enabled:
            return
        out = self.stream or sys.stderr
        now = time.monotonic()
        elapsed = now - self.start
        eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
        extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        done = self.n >= self.total
        if not _isatty(out):
            if done or now - self._last_line >= self.log_interval_s:
                self._last_line = now
                out.write(f"{self.desc} {self.n}/{self.total} {elapsed:.0f}s eta {eta:.0f}s {extra}".rstrip() + "\n")
                out.flush()
            return
        width = 24
        filled = int(width * min(self.n, self.total) / self.total)
        out.write(
            f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} "
            f"{elapsed:5.0f}s eta {eta:5.0f}s {extra}\033[K"
        )
        if done:
            out.write("\n")
        out.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---- one training step's metrics, between the step and the logger -----------------------------


def host_values(m: dict[str, Any]) -> dict[str, Any]:
    """0-d tensors -> Python numbers: a step's one batch of host syncs (on logged and checked steps only)."""
    return {k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for k, v in m.items()}


class NonfiniteGuard:
    """Counts steps whose update was skipped (non-finite loss or gradients, gadx.train.player.Player.step)
    and stops the run after more than ``max_run`` in a row: a run that only skips learns nothing."""

    def __init__(self, max_run: int, *, total: int = 0, run: int = 0):
        self.max_run, self.total, self.run = max_run, total, run

    def update(self, m: dict[str, Any], step: int) -> None:
        skipped = bool(m.get("skipped/g")) or bool(m.get("skipped/d"))
        self.run = self.run + 1 if skipped else 0
        self.total += int(skipped)
        if self.run > self.max_run:
            raise RuntimeError(f"{self.run} consecutive steps with non-finite loss or gradients "
                               f"(run.max_nonfinite={self.max_run}); stopping at step {step}. "
                               "Lower the learning rate or check the data.")


def length_drift(m: dict[str, Any], factor: float) -> str | None:
    """A warning when the student's replies grew past ``factor`` x the teacher's (reward hacking by length)."""
    ls, lt = m.get("len/student"), m.get("len/teacher")
    if ls and lt and ls > factor * lt:
        return f"student responses ({ls:.1f} tokens) exceed {factor}x the teacher's ({lt:.1f})"
    return None


def finish_row(m: dict[str, Any], *, stage: str, lr_g: float, dt: float, teacher_wait_s: float,
               times: dict[str, float], cost_usd: float, nonfinite_total: int) -> dict[str, Any]:
    """A logged step's row: the step's metrics plus stage, lr, timings and throughput (``m`` is updated)."""
    m.update({"stage": stage, "lr/g": lr_g, "time/step": dt, "time/teacher_wait": teacher_wait_s,
              **{f"time/{k}": v for k, v in times.items()},
              "tokens_per_s": m.pop("tokens") / dt, "teacher/cost_usd": cost_usd,
              "nonfinite_total": nonfinite_total})
    if "tokens_generated" in m:
        m["rollout_tokens_per_s"] = m.pop("tokens_generated") / max(times.get("rollout", dt), 1e-9)
    return m
