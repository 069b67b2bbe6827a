"""GRPO policy loss fused with the LM head: loss and grads from logits in token chunks.

    loss, metrics = grpo_loss(hidden_TH, weight_VH, targets_T, adv_T, old_logp_T, ref_logp_T, mask_T,
                              clip_low=0.2, clip_high=0.2, dual_clip=3.0, kl_coef=0.001,
                              temperature=1.0, normalizer=n_valid_tokens_tensor)
    loss.backward()   # grads land in hidden_TH.grad and weight_VH.grad

Layering (Liger style): row kernels (triton_rows.py / rowwise_torch.py) ->
chunked head pass (chunked.py) -> _GRPOLoss (autograd.Function) -> functions
below. The gradient is computed during the forward pass (the loss is a scalar,
so backward only scales the stored dX and fp32 dW by the upstream grad).
Peak extra memory: one chunk of fp32 logits (the whole [T, V] when T is below the chunk
size: 2 GiB budget on CUDA, so up to ~2,300 tokens at V = 152K), plus dW [V, H] in fp32
held from forward to backward, plus in backward its copy scaled by the upstream grad (in
the weight's dtype), plus dX [T, H]. Details and the arithmetic: chunked.py; measured
against eager PyTorch and Liger: benchmarks/bench_loss_memory.py.
loss = sum(mask * per_token) / normalizer; normalizer may be a device tensor
(e.g. the valid-token count over micro-batches and ranks), never read on host.
Metrics (0-d, over masked-in tokens): clip_frac, kl, ratio, entropy if asked.
"""
from dataclasses import dataclass

import torch

from .backend import resolve_backend
from .chunked import head_pass
from .checks import check_head, check_loss_inputs
from .loss_math import grpo_terms, masked_mean, resolve_normalizer


@dataclass(frozen=True)
class _Cfg:
    clip_low: float
    clip_high: float
    dual_clip: float | None
    kl_coef: float
    temperature: float
    compute_entropy: bool
    chunk_bytes: int | None
    backend: str
    vocab_start: int = 0
    group: object = None
    vocab_size: int | None = None


class _GRPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_TH, weight_VH, targets_T, adv_T, old_T, ref_T, mask_T, normalizer, cfg: _Cfg):
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        T, dev = hidden_TH.shape[0], hidden_TH.device
        mask_T = mask_T.to(torch.float32)
        norm = resolve_normalizer(normalizer, mask_T)
        per_token_T = torch.empty(T, dtype=torch.float32, device=dev)
        clipped_T = torch.empty(T, dtype=torch.float32, device=dev)
        ratio_T = torch.empty(T, dtype=torch.float32, device=dev)
        kl_T = torch.zeros(T, dtype=torch.float32, device=dev)
        use_ref = ref_T is not None

        def coef_fn(a, b, logp_C, _ent_C):
            pt, dpt, clipped, ratio, kl = grpo_terms(
                logp_C, logp_C if old_T is None else old_T[a:b].float(), adv_T[a:b].float(), ref_T[a:b].float() if use_ref else None,
                clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip, kl_coef=cfg.kl_coef)
            m = mask_T[a:b]
            keep = m > 0  # where(), not a product: padding may carry inf/nan log-probs
            per_token_T[a:b] = torch.where(keep, pt * m, 0.0)
            clipped_T[a:b] = clipped.float()
            ratio_T[a:b] = ratio
            if kl is not None:
                kl_T[a:b] = kl
            if not (need_dx or need_dw):
                return None
            return torch.where(keep, dpt * m, 0.0) / norm

        _, ent_T, dX, dW = head_pass(hidden_TH, weight_VH, targets_T, temperature=cfg.temperature,
                                     backend=cfg.backend, vocab_start=cfg.vocab_start, group=cfg.group,
                                     want_entropy=cfg.compute_entropy, coef_fn=coef_fn, need_dx=need_dx,
                                     need_dw=need_dw, chunk_bytes=cfg.chunk_bytes, vocab_size=cfg.vocab_size)
        loss = per_token_T.sum() / norm
        metrics = (masked_mean(clipped_T, mask_T), masked_mean(kl_T, mask_T), masked_mean(ratio_T, mask_T),
                   masked_mean(ent_T, mask_T) if cfg.compute_entropy else torch.zeros((), device=dev))
        ctx.save_for_backward(dX, dW)
        ctx.dtypes = (hidden_TH.dtype, weight_VH.dtype)
        ctx.mark_non_differentiable(*metrics)
        return (loss, *metrics)

    @staticmethod
    def backward(ctx, g_loss, *_metric_grads):
        dX, dW = ctx.saved_tensors
        gx = (dX * g_loss).to(ctx.dtypes[0]) if dX is not None else None
        gw = (dW * g_loss).to(ctx.dtypes[1]) if dW is not None else None
        return gx, gw, None, None, None, None, None, None, None


def _grpo(hidden, weight, targets, advantages, old_logprobs, ref_logprobs, mask, *, clip_low, clip_high, dual_clip,
          kl_coef, temperature, normalizer, compute_entropy, chunk_bytes, backend, vocab_start, group,
          vocab_size=None):
    check_loss_inputs(hidden, advantages, old_logprobs, ref_logprobs, mask, normalizer, clip_low, clip_high,
                      dual_clip, kl_coef, chunk_bytes)
    cfg = _Cfg(float(clip_low), float(clip_high), None if dual_clip is None else float(dual_clip), float(kl_coef),
               float(temperature), bool(compute_entropy), chunk_bytes, resolve_backend(backend, hidden.device),
               vocab_start, group, vocab_size)
    ref = ref_logprobs if (ref_logprobs is not None) else None
    loss, clip_frac, kl, ratio, ent = _GRPOLoss.apply(hidden, weight, targets, advantages, old_logprobs, ref, mask,
                                                      normalizer, cfg)
    metrics = {"clip_frac": clip_frac, "kl": kl, "ratio": ratio}
    if compute_entropy:
        metrics["entropy"] = ent
    return loss, metrics


def grpo_loss(hidden, weight, targets, advantages, old_logprobs, ref_logprobs, mask, *, clip_low=0.2, clip_high=0.2,
              dual_clip=3.0, kl_coef=0.001, temperature=1.0, normalizer=None, compute_entropy=False,
              chunk_bytes=None, backend=None):
    """GRPO loss of the head hidden [T, H] @ weight [V, H]^T / temperature at targets [T].

    advantages, old_logprobs, ref_logprobs (None drops KL), mask (bool or weights): [T].
    old_logprobs None: one policy update per rollout (on-policy), so the old log-probs are this
    pass's own (ratio 1, gradient -A dlogp): the caller skips a forward, as verl and TRL do.
    kl_coef=0 also drops the KL term from the loss (its metric is still reported when ref is given).
    dual_clip=None disables the dual clip. Returns (loss 0-d fp32, metrics dict of 0-d tensors)."""
    check_head(hidden, weight, targets, temperature)
    return _grpo(hidden, weight, targets, advantages, old_logprobs, ref_logprobs, mask, clip_low=clip_low,
                 clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef, temperature=temperature,
                 normalizer=normalizer, compute_entropy=compute_entropy, chunk_bytes=chunk_bytes, backend=backend,
                 vocab_start=0, group=None)


def vocab_parallel_grpo_loss(hidden, weight_shard, targets, advantages, old_logprobs, ref_logprobs, mask, *,
                             vocab_start, group, clip_low=0.2, clip_high=0.2, dual_clip=3.0, kl_coef=0.001,
                             temperature=1.0, normalizer=None, compute_entropy=False, chunk_bytes=None,
                             backend=None, vocab_size=None):
    """grpo_loss with the head split over V across `group` (weight_shard covers global ids
    [vocab_start, vocab_start + V_local)). Every rank gets the same loss and metrics; one all-gather
    of 4*C floats per token chunk merges the shards. hidden is the replicated input: its grad is
    all-reduced over `group` here, so do not also wrap it in megatron's copy_to_tensor_model_parallel_region.
    vocab_size: the global (padded) vocab; needed when shards differ in size (see chunked.head_pass)."""
    check_head(hidden, weight_shard, targets, temperature, vocab_start=vocab_start, vocab_size=vocab_size)
    return _grpo(hidden, weight_shard, targets, advantages, old_logprobs, ref_logprobs, mask, clip_low=clip_low,
                 clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef, temperature=temperature,
                 normalizer=normalizer, compute_entropy=compute_entropy, chunk_bytes=chunk_bytes, backend=backend,
                 vocab_start=vocab_start, group=group, vocab_size=vocab_size)
