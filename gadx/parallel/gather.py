"""The full HF state dict of a sharded model: the one gather, for the rollout sampler and any copy.

    sd = gather_hf_state_dict(model)                      # every rank: all HF tensors, on the model's device
    sd = gather_hf_state_dict(model, to="first_stage")    # only pipeline stage 0 gets them ({} elsewhere)
    sd = gather_hf_state_dict(model, host=True)           # on the host, one stage at a time
    engine.load_weights(sd)                               # gadx.sampler.KVCacheSampler

Rollouts under TP/PP use option (a) of docs/distributed.md: gather the student once per
step and sample replicated on every TP rank (each DP replica samples its own prompts).
TP shards are gathered per parameter by the model's ``hf_state_dict()`` (gadx.models.hf_io:
all-gather over the TP group); pipeline stages then exchange their tensors as one flat buffer per
dtype and stage (broadcast over the PP group, or point-to-point to stage 0 with ``to="first_stage"``).
Collective: every rank of the model's TP and PP groups must call it.

Memory at PP > 1 (what a receiving rank holds besides the model):
- default (device): the other stages' tensors, as the flat buffers they arrived in (the result
  holds views of them, so the sampler binds them without a copy); this stage's own tensors are
  the model's (views at TP=1), plus one transient flat copy of them while sending.
- ``host=True``: the result is on the host; each received buffer is copied to the host and
  freed before the next stage's arrives, so the device holds at most one stage's buffer beyond
  the model. For a copy that stays on the host (a save, an export) or, with ``to="first_stage"``,
  a copy that only stage 0 needs: no rank ever holds the whole model on its device.
Only the exchange moves data; the names, shapes and dtypes of each stage's tensors are exchanged
first (``stage_metas``, a small object all-gather).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

TARGETS = ("all", "first_stage")

Meta = list[tuple[str, tuple[int, ...], torch.dtype]]  # one stage's (HF name, shape, dtype), in its order


def gather_hf_state_dict(model, *, to: str = "all", host: bool = False) -> dict[str, torch.Tensor]:
    """HF-named full tensors of a ``GadxModel`` (or a wrapper with a ``.module`` chain, e.g. megatron
    DDP) at any TP/PP layout, equal to its TP1PP1 ``hf_state_dict``. ``to="first_stage"`` leaves
    the other stages with ``{}``; ``host=True`` returns host tensors (see the module docstring)."""
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    model = unwrap(model)
    local = model.hf_state_dict()  # TP shards gathered by the model layer (gadx.models.hf_io)
    if model.dims.pp == 1:
        return _to_host(local) if host else local
    return exchange_stages(local, stage_metas(local, model.dims), model.dims, to=to, host=host)


def unwrap(model):
    """The GadxModel inside megatron DDP / Float16Module wrappers (found by its ``.dims``)."""
    while not hasattr(model, "dims"):
        model = model.module
    return model


def stage_metas(local: dict[str, torch.Tensor], dims) -> list[Meta]:
    """Every pipeline stage's (name, shape, dtype) list, in stage order (collective over the PP group)."""
    metas: list = [None] * dims.pp
    dist.all_gather_object(metas, [(k, tuple(v.shape), v.dtype) for k, v in local.items()], group=dims.pp_group)
    return metas


def exchange_stages(local: dict[str, torch.Tensor], metas: list[Meta], dims, *, to: str = "all",
                    host: bool = False) -> dict[str, torch.Tensor]:
    """The PP exchange of ``gather_hf_state_dict`` given ``stage_metas`` (``metas[dims.pp_rank]``
    must list ``local``'s tensors): stage by stage, one flat buffer per dtype."""
    assert [k for k, _, _ in metas[dims.pp_rank]] == list(local), "metas[pp_rank] must describe local"
    group = dims.pp_group
    ranks = dist.get_process_group_ranks(group)
    receives = to == "all" or dims.is_first_stage
    out: dict[str, torch.Tensor] = {}
    for stage, meta in enumerate(metas):
        if stage == dims.pp_rank:
            if receives:
                out.update(_to_host(local) if host else local)
            if to == "all":
                for flat in _flat_by_dtype(local, meta):
                    dist.broadcast(flat, src=ranks[stage], group=group)
            elif not dims.is_first_stage:
                for flat in _flat_by_dtype(local, meta):
                    dist.send(flat, dst=ranks[0], group=group)
            continue
        if not receives:
            continue
        for dtype in _dtypes(meta):
            entries = [(k, s) for k, s, d in meta if d == dtype]
            flat = torch.empty(sum(_numel(s) for _, s in entries), dtype=dtype, device=dims.device)
            if to == "all":
                dist.broadcast(flat, src=ranks[stage], group=group)
            else:
                dist.recv(flat, src=ranks[stage], group=group)
            if host:
                flat = flat.cpu()  # the device buffer is freed here, before the next one arrives
            for (k, s), piece in zip(entries, flat.split([_numel(s) for _, s in entries])):
                out[k] = piece.view(s)
    return out


def _to_host(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # a copy even on a CPU model: a host result never aliases the live parameters
    return {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dtypes(meta: Meta) -> list[torch.dtype]:
    return sorted({d for _, _, d in meta}, key=str)


def _flat_by_dtype(local: dict[str, torch.Tensor], meta: Meta) -> list[torch.Tensor]:
    return [torch.cat([local[k].reshape(-1) for k, _, d in meta if d == dtype]) for dtype in _dtypes(meta)]
