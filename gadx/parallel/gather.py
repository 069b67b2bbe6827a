"""The full HF state dict of a sharded model, for the single-device rollout sampler.

    sd = gather_hf_state_dict(model)                      # every rank: all HF tensors
    sd = gather_hf_state_dict(model, to="first_stage")    # only pipeline stage 0 gets them ({} elsewhere)
    engine.load_weights(sd)                               # gadx.sampler.KVCacheSampler

Rollouts under TP/PP use option (a) of docs/distributed.md: gather the student once per
step and sample replicated on every TP rank (each DP replica samples its own prompts).
TP shards are gathered per parameter by the model's ``hf_state_dict()`` (gadx.models.hf_io:
all-gather over the TP group); pipeline stages then exchange their tensors as one flat buffer per dtype
(broadcast over the PP group, or point-to-point to stage 0 with ``to="first_stage"``).
Collective: every rank of the model's TP and PP groups must call it. Cost: the model's
full size in memory on each receiving rank, plus one flat copy per stage while exchanging.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

TARGETS = ("all", "first_stage")


def gather_hf_state_dict(model, *, to: str = "all") -> dict[str, torch.Tensor]:
    """HF-named full tensors of a ``GadxModel`` at any TP/PP layout (equal to its TP1PP1
    ``hf_state_dict``). ``to="first_stage"`` leaves the other stages with ``{}``."""
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    while not hasattr(model, "dims"):  # megatron DDP -> GadxModel
        model = model.module
    dims = model.dims
    local = model.hf_state_dict()  # TP shards gathered by the model layer (gadx.models.hf_io)
    if dims.pp == 1:
        return local
    group = dims.pp_group
    ranks = dist.get_process_group_ranks(group)
    metas: list = [None] * dims.pp
    dist.all_gather_object(metas, [(k, tuple(v.shape), v.dtype) for k, v in local.items()], group=group)
    out: dict[str, torch.Tensor] = {}
    for stage, meta in enumerate(metas):
        if stage == dims.pp_rank:
            if to == "all" or dims.is_first_stage:
                out.update(local)
            if to == "all":
                for flat in _flat_by_dtype(local, meta):
                    dist.broadcast(flat, src=ranks[stage], group=group)
            elif not dims.is_first_stage:
                for flat in _flat_by_dtype(local, meta):
                    dist.send(flat, dst=ranks[0], group=group)
            continue
        if to == "first_stage" and not dims.is_first_stage:
            continue
        for dtype in _dtypes(meta):
            entries = [(k, s) for k, s, d in meta if d == dtype]
            flat = torch.empty(sum(_numel(s) for _, s in entries), dtype=dtype, device=dims.device)
            if to == "all":
                dist.broadcast(flat, src=ranks[stage], group=group)
            else:
                dist.recv(flat, src=ranks[stage], group=group)
            for (k, s), piece in zip(entries, flat.split([_numel(s) for _, s in entries])):
                out[k] = piece.view(s)
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dtypes(meta) -> list[torch.dtype]:
    return sorted({d for _, _, d in meta}, key=str)


def _flat_by_dtype(local: dict[str, torch.Tensor], meta) -> list[torch.Tensor]:
    return [torch.cat([local[k].reshape(-1) for k, _, d in meta if d == dtype]) for dtype in _dtypes(meta)]
