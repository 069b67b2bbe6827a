"""Metrics: one JSON line per logged step (metrics.jsonl), TensorBoard, optional W&B, a progress bar.

    log = MetricsLogger(out_dir, enabled=rank == 0, tensorboard=True)
    log.log(step, {"stage": "gad", "loss/g": 0.31, ...})    # floats or 0-d tensors
    log.close()

Values may be 0-d tensors: they are converted only here, once per logged step,
so the step itself never syncs with the host.
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
        return str(v)  # JSON has no nan/inf
    return v


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, wandb: bool = False, config: dict | None = None):
        self.enabled = enabled
        self._tb = self._wb = None
        self.path = Path(out_dir) / "metrics.jsonl"
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tb"))
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
    """A one-line progress bar with ETA on stderr (rank 0 only); a no-op when disabled."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True):
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.start = time.monotonic()
        self.n = 0

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
        width = 24
        filled = int(width * self.n / self.total)
        extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        sys.stderr.write(
            f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.n}/{self.total} "
            f"{elapsed:5.0f}s eta {eta:5.0f}s {extra}\033[K"
        )
        if self.n >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()
