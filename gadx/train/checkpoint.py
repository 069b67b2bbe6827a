"""Atomic checkpoints: each rank writes its shard into a temporary folder, then rank 0 renames it.

Layout: ``<out>/checkpoints/step-000040/{config.json, meta.json, rank00000.pt, ...}`` and
``<out>/checkpoints/latest`` (a file naming the last complete checkpoint, replaced
atomically). A kill during a save leaves ``tmp-*`` debris and the previous
checkpoint intact; ``latest`` only ever names a complete folder. The last
``keep`` checkpoints are kept.

    save_checkpoint(root, step, state, config_json, meta)   # every rank calls it
    ckpt = latest_checkpoint(root)                        # Path or None
    state = load_rank_state(ckpt)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: str | Path, step: int, state: dict[str, Any], config_json: str, meta: dict[str, Any], *, keep: int = 2) -> Path:
    root = Path(root)
    name = f"step-{step:06d}"
    tmp, final = root / f"tmp-{name}", root / name
    rank = _rank()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    shard = tmp / f"rank{rank:05d}.pt"
    with open(shard, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _barrier()
    if rank == 0:
        _fsync_write(tmp / "config.json", config_json.encode())
        _fsync_write(tmp / "meta.json", json.dumps({"step": step, **meta}, indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # a re-save of the same step (e.g. a stage end right after a periodic save)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        _fsync_write(root / "latest.tmp", name.encode())
        os.replace(root / "latest.tmp", root / "latest")
        _fsync_dir(root)
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old)
    _barrier()
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    marker = root / "latest"
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if (path / "meta.json").is_file() else None


def load_rank_state(ckpt: Path) -> dict[str, Any]:
    shard = ckpt / f"rank{_rank():05d}.pt"
    if not shard.is_file():
        raise ValueError(f"{ckpt}: no shard for rank {_rank()}; resume needs the same parallel layout it was saved with")
    return torch.load(shard, map_location="cpu", weights_only=False)


def load_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "meta.json").read_text())


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
