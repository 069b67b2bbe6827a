"""Load an HF checkpoint folder straight into a sampler (no megatron model in between).

    sampler = gadx.sampler.from_pretrained("ckpt/", max_batch=64, max_seq_len=1024)
"""
from __future__ import annotations

from pathlib import Path

import torch

from gadx.models.config import ModelConfig
from gadx.models.safetensors_folder import load_safetensors  # also exported by gadx.sampler
from gadx.sampler.kv_sampler import KVCacheSampler


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
