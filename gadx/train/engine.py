"""A trained or frozen model driven by megatron's schedule: DDP + distributed optimizer via gadx.parallel.

    g = Player(student, lr=1e-6, weight_decay=0.01, clip_grad=0.2)
    outs = g.run(mbs, forward_step)                     # forward+backward over packed micro-batches
    applied, grad_norm = g.step(loss_sum)                # skipped (False) when loss or grads are non-finite
    ref = Player(frozen_copy, trainable=False)           # forward-only (reference policy): no DDP, no grad buffers

``forward_step(mb, model) -> (output, loss_func)`` is megatron's forward_step_func
with the micro-batch already taken from the iterator. Loss normalisation:
megatron divides each micro-batch loss by the number of micro-batches and DDP
averages gradients over data-parallel ranks, so a loss that should be
``sum(token terms) / global_count`` is given the normaliser
``global_count / (dp * num_microbatches)`` (see ``scaled_normalizer``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist

from gadx.parallel import build_optimizer, forward_backward, wrap_ddp

from .packing import MicroBatch


def scaled_normalizer(global_count: torch.Tensor, dp: int, num_microbatches: int) -> torch.Tensor:
    """The per-micro-batch normaliser that makes megatron's averaging yield sum / global_count."""
    return global_count.clamp(min=1.0) / (dp * num_microbatches)


class _Frozen(torch.nn.Module):
    """A forward-only chunk for megatron's schedule: what it reads off a DDP chunk (``config``,
    ``set_input_tensor``, ``.module`` down to the GPTModel) without DDP's gradient buffers."""

    def __init__(self, model):
        super().__init__()
        self.module = model
        self.config = model.gpt.config

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def set_input_tensor(self, input_tensor) -> None:
        self.module.set_input_tensor(input_tensor)


class Player:
    def __init__(self, model, *, lr: float = 0.0, weight_decay: float = 0.0, clip_grad: float = 0.0, trainable: bool = True):
        self.model = model
        self.opt = None
        if trainable:
            self.chunks = wrap_ddp([model])
            self.opt = build_optimizer(self.chunks, lr=lr, weight_decay=weight_decay, clip_grad=clip_grad)
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            self.chunks = [_Frozen(model)]

    def run(self, mbs: list[MicroBatch], forward_step: Callable[[MicroBatch, Any], tuple], *, forward_only: bool = False) -> list[dict]:
        assert mbs, "no micro-batches"
        assert forward_only or self.opt is not None, "a frozen player runs forward only"

        def fs(data_iterator, chunk):
            return forward_step(next(data_iterator), chunk)

        T = mbs[0].num_tokens
        assert self.model.dims.pp == 1 or all(mb.num_tokens == T for mb in mbs), "PP needs fixed-shape micro-batches"
        ctx = torch.no_grad() if forward_only else torch.enable_grad()
        with ctx:
            return forward_backward(
                self.chunks, fs, iter(mbs), num_microbatches=len(mbs),
                seq_length=max(mb.num_tokens for mb in mbs), micro_batch_size=1,
                forward_only=forward_only, optimizer=self.opt,
            )

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def grads_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """0-d bool tensor: loss and every local gradient finite on every rank (one all-reduce)."""
        bad = (~torch.isfinite(loss.detach().float())).float().reshape(1)
        for c in self.chunks:
            for buf in c.buffers:
                bad = bad + (~torch.isfinite(buf.grad_data)).any().float()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad)
        return bad[0] == 0

    def step(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Optimizer step unless loss/grads are non-finite. The one host sync of a training step."""
        if not bool(self.grads_finite(loss)):
            self.opt.zero_grad()
            return False, float("nan")
        ok, grad_norm, _ = self.opt.step()
        return bool(ok), float(grad_norm) if grad_norm is not None else float("nan")


def full_hf_state(model) -> dict[str, torch.Tensor]:
    """The whole student in HF names for the rollout engine. At PP > 1 each stage holds only its
    layers: the stages' tensors are gathered over the pipeline group (host copies; the sampler
    then runs the whole model on every rank). TP shards are gathered by hf_state_dict."""
    from gadx.models import hf_state_dict

    sd = hf_state_dict(model)
    dims = model.dims
    if dims.pp == 1:
        return sd
    parts: list = [None] * dims.pp
    dist.all_gather_object(parts, {k: v.detach().cpu() for k, v in sd.items()}, group=dims.pp_group)
    full: dict[str, torch.Tensor] = {}
    for part in parts:  # first stage first: its embedding wins over the last stage's tied copy
        for k, v in part.items():
            full.setdefault(k, v)
    if model.config.tie_embeddings:
        full.pop("lm_head.weight", None)
    return full
