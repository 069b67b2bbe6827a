"""Load an HF checkpoint folder straight into a sampler (no megatron model in between).

    sampler = gadx.sampler.from_pretrained("ckpt/", max_batch=64, max_seq_len=1024)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from gadx.models.config import ModelConfig
from gadx.sampler.kv_sampler import KVCacheSampler


def load_safetensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """HF-named tensors from ``model.safetensors`` or the shards named in ``model.safetensors.index.json``."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ValueError(f"{index}: malformed shard index ({e!r})") from None
        files = [folder / s for s in shards]
    elif single.is_file():
        files = [single]
    else:
        pickled = sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickled:
            raise ValueError(f"{folder}: only pickled weights {pickled}; gadx loads safetensors only")
        raise ValueError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise ValueError(f"{index}: shard {f.name} not found")
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors' error names no file
            raise ValueError(f"{f}: not a readable safetensors file ({' '.join(str(e).split())})") from None
    return state


def from_pretrained(folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                    max_batch: int = 64, max_seq_len: int | None = None) -> KVCacheSampler:
    """A :class:`KVCacheSampler` for the checkpoint in ``folder`` (config.json + safetensors)."""
    cfg = ModelConfig.from_pretrained(folder)
    sampler = KVCacheSampler(cfg, device=device, dtype=dtype, max_batch=max_batch, max_seq_len=max_seq_len)
    try:
        sampler.load_weights(load_safetensors(folder))
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    return sampler
