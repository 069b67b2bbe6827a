"""Moving step outputs between ranks: last pipeline stage -> every stage, and sums over data parallel.

    sums = stage_sums(dims, outs, ("loss_sum", "correct"))      # {key: 0-d}, summed over micro-batches
                                                                # and DP ranks, on every rank
    scores_N = seq_values(dims, mbs, outs, "scores", N)         # per packed sequence, every stage
    logp = token_values(dims, mbs, outs, "logp", S)             # per sequence's response tokens
    m = dp_mean(dims, {"reward/mean": r, ...})                  # means of equal-sized DP shards

megatron's schedule returns the loss_func outputs on the last pipeline stage only
([] elsewhere). Broadcasting them over the pipeline group keeps every rank's control
flow and metrics identical, so rank 0 logs and every stage packs the same batches.
All of it stays on the device: no host syncs.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .packing import MicroBatch, unpack_tokens


def _from_last_stage(dims, x: torch.Tensor) -> torch.Tensor:
    if dims.pp > 1:
        from megatron.core import parallel_state as ps

        dist.broadcast(x, src=ps.get_pipeline_model_parallel_last_rank(), group=dims.pp_group)
    return x


def _dp_sum(dims, x: torch.Tensor) -> torch.Tensor:
    if dims.dp > 1:
        dist.all_reduce(x, group=dims.dp_group)
    return x


def stage_sums(dims, outs: list[dict], keys: tuple[str, ...], *, over_dp: bool = True) -> dict[str, torch.Tensor]:
    """Each key summed over this rank's micro-batches (and the DP ranks), one collective each way."""
    if dims.is_last_stage:
        v_K = torch.stack([torch.stack([o[k].float().sum() for o in outs]).sum() for k in keys])
    else:
        v_K = torch.zeros(len(keys), device=dims.device)
    v_K = _from_last_stage(dims, v_K)
    if over_dp:
        v_K = _dp_sum(dims, v_K)
    return dict(zip(keys, v_K.unbind()))


def seq_values(dims, mbs: list[MicroBatch], outs: list[dict], key: str, n: int) -> torch.Tensor:
    """[n] values, one per packed sequence (in the caller's order), on every stage."""
    out_N = torch.zeros(n, device=dims.device)
    if dims.is_last_stage:
        for mb, o in zip(mbs, outs):
            out_N[mb.seq_N] = o[key].float()
    return _from_last_stage(dims, out_N)


def token_values(dims, mbs: list[MicroBatch], outs: list[dict], key: str, n: int) -> list[torch.Tensor]:
    """Per-token values of every micro-batch's rows, split back into each sequence's response tokens."""
    if dims.is_last_stage:
        flat = torch.cat([o[key].float() for o in outs])
    else:
        flat = torch.zeros(sum(mb.num_tokens for mb in mbs), device=dims.device)
    flat = _from_last_stage(dims, flat)
    return unpack_tokens(mbs, list(flat.split([mb.num_tokens for mb in mbs])), n)


def dp_mean(dims, metrics: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor]:
    """Average per-rank metrics over DP ranks (every rank holds the same number of prompts and samples)."""
    keys = list(metrics)
    v_K = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float32, device=dims.device) for k in keys])
    return dict(zip(keys, (_dp_sum(dims, v_K) / dims.dp).unbind()))
