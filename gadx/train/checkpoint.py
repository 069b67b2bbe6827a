"""Atomic, layout-free checkpoints: the models and their Adam state in megatron's distributed
format (gadx.parallel.save_sharded: global tensors, so a run saved at one TP/PP/DP layout
resumes at any other), written into a temporary folder that rank 0 then renames.

Layout: ``<out>/checkpoints/step-000040/{dist/, config.json, meta.json, rank00000.pt, ...}``
and ``<out>/checkpoints/latest`` (a file naming the last complete checkpoint, replaced
atomically). ``dist/`` holds the tensors and the run's global state (``extra``); the
``rank*.pt`` files hold each rank's RNG state (tensors, ints and floats only: loaded with
``weights_only=True``, so a planted pickle is refused, never run), restored only at the same
world size. A kill
during a save leaves ``tmp-*`` debris and the previous checkpoint intact; ``latest`` only
ever names a complete folder. The last ``keep`` checkpoints are kept.

    save_checkpoint(root, step, models, optimizers, state, config_json, meta)   # every rank
    ckpt = latest_checkpoint(root)                                            # Path or None
    state = load_checkpoint(ckpt, models, optimizers)   # models built at this run's layout
"""
from __future__ import annotations

import json
import os
import pickle
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


def save_checkpoint(root: str | Path, step: int, models: dict[str, Any], optimizers: dict[str, Any],
                    state: dict[str, Any], config_json: str, meta: dict[str, Any], *, keep: int = 2) -> Path:
    """``models`` / ``optimizers``: name -> GadxModel (or DDP chunk) / megatron optimizer;
    ``state``: the run's JSON-able global state (the same on every rank)."""
    from gadx.parallel.dist_ckpt import save_sharded

    root = Path(root)
    name = f"step-{step:06d}"
    tmp, final = root / f"tmp-{name}", root / name
    rank = _rank()
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    save_sharded(tmp / "dist", models, optimizers=optimizers, extra=state)
    with open(tmp / f"rank{rank:05d}.pt", "wb") as f:
        torch.save({"rng": rng_state()}, f)
        f.flush()
        os.fsync(f.fileno())
    _barrier()
    if rank == 0:
        _fsync_write(tmp / "config.json", config_json.encode())
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        _fsync_write(tmp / "meta.json", json.dumps({"step": step, "world": world, **meta}, indent=2).encode())
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


def saved_models(ckpt: Path) -> list[str]:
    """Names of the models a checkpoint holds."""
    from gadx.parallel.dist_ckpt import EXTRA_FILE

    return json.loads((ckpt / "dist" / EXTRA_FILE).read_text())["models"]


def load_checkpoint(ckpt: Path, models: dict[str, Any], optimizers: dict[str, Any]) -> dict[str, Any]:
    """Fill ``models`` and ``optimizers`` (built at this process's layout, any layout) from
    ``ckpt``; restore this rank's RNG state when the world size is the one it was saved at.
    Returns the run's global state."""
    from gadx.parallel.dist_ckpt import load_sharded

    if not (ckpt / "dist").is_dir():
        raise ValueError(f"{ckpt}: no dist/ folder; checkpoints from gadx before layout-free "
                         "checkpoints (one rank*.pt per rank) cannot be resumed")
    state = load_sharded(ckpt / "dist", models, optimizers=optimizers)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    shard = ckpt / f"rank{_rank():05d}.pt"
    if load_meta(ckpt)["world"] == world and shard.is_file():
        set_rng_state(load_rng_file(shard))
    return state


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    marker = root / "latest"
    if not marker.is_file():
        return None
    path = root / marker.read_text().strip()
    return path if (path / "meta.json").is_file() else None


def load_meta(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "meta.json").read_text())


def load_rng_file(path: Path) -> dict[str, Any]:
    """A rank's RNG file, read as data only: torch's weights-only unpickler refuses anything
    but tensors and plain containers, so a run directory from elsewhere cannot run code here."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["rng"]
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if "nsupported global" in line.lower()), lines[0] if lines else "")
        raise ValueError(f"{path}: refused to load: not plain checkpoint data ({why.split('error: ')[-1]}); "
                         "RNG files written before gadx stored RNG states as tensors cannot be resumed") from None


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers (loadable with weights_only=True)."""
    import random

    import numpy as np

    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    assert key == "MT19937", key
    return {"python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
            "numpy": {"mt": torch.from_numpy(np_mt.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    py, npy = st["python"], st["numpy"]
    random.setstate((py["version"], tuple(int(x) for x in py["mt"].tolist()), py["gauss"]))
    np.random.set_state(("MT19937", npy["mt"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(st["torch"])
