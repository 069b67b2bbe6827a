"""Input validation shared by every kernel entry point.

Every user mistake raises ValueError before anything is launched. The target
range check reads the targets on CPU tensors only; on CUDA it becomes a
device-side assert (torch._assert_async) so the hot path never syncs.
"""
import numbers

import torch


def _shape(name: str, t, shape: tuple, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but hidden is on {device}")


def check_head(hidden, weight, targets, temperature, *, vocab_start: int | None = None,
               vocab_size: int | None = None) -> None:
    """hidden [T, H] float, weight [V, H] same dtype/device, targets [T] int in [0, V)."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ValueError(f"hidden must be a 2-D [T, H] tensor, got {getattr(hidden, 'shape', type(hidden))}")
    if not hidden.is_floating_point():
        raise ValueError(f"hidden must be floating point, got {hidden.dtype}")
    T, H = hidden.shape
    if T == 0 or H == 0:
        raise ValueError(f"hidden must be non-empty, got shape {list(hidden.shape)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != H or weight.shape[0] == 0:
        raise ValueError(f"weight must be [V, {H}] to match hidden, got {getattr(weight, 'shape', type(weight))}")
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device} but hidden is on {hidden.device}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    _shape("targets", targets, (T,), hidden.device)
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"targets must be an integer tensor, got {targets.dtype}")
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    V = weight.shape[0]
    if vocab_start is None:  # single rank: targets index this weight
        if targets.device.type == "cpu":
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"targets must lie in [0, {V}), got range [{lo}, {hi}]")
        else:
            torch._assert_async(((targets >= 0) & (targets < V)).all(), "targets out of vocab range")
    else:
        if not isinstance(vocab_start, numbers.Integral) or vocab_start < 0:
            raise ValueError(f"vocab_start must be a non-negative int, got {vocab_start!r}")
        if vocab_size is not None and (not isinstance(vocab_size, numbers.Integral)
                                       or vocab_size < vocab_start + V):
            raise ValueError(f"vocab_size {vocab_size!r} must be an int >= vocab_start + shard size "
                             f"({vocab_start} + {V})")
        if targets.device.type == "cpu":
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or (vocab_size is not None and hi >= vocab_size):
                raise ValueError(f"targets must lie in [0, {vocab_size or 'vocab'}), got range [{lo}, {hi}]")


def check_loss_inputs(hidden, advantages, old_logprobs, ref_logprobs, mask, normalizer,
                      clip_low, clip_high, dual_clip, kl_coef, chunk_bytes) -> None:
    T, dev = (hidden.shape[0],), hidden.device
    for name, t in (("advantages", advantages), ("old_logprobs", old_logprobs)):
        if t is None and name == "old_logprobs":  # on-policy: the ratio is taken against this pass's own log-probs
            continue
        _shape(name, t, T, dev)
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if ref_logprobs is not None:
        _shape("ref_logprobs", ref_logprobs, T, dev)
        if not ref_logprobs.is_floating_point():
            raise ValueError(f"ref_logprobs must be floating point, got {ref_logprobs.dtype}")
    _shape("mask", mask, T, dev)
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"mask must be bool or floating point, got {mask.dtype}")
    if normalizer is not None:
        if isinstance(normalizer, torch.Tensor):
            if normalizer.numel() != 1 or normalizer.device != dev:
                raise ValueError(f"normalizer tensor must hold one value on {dev}, got shape "
                                 f"{list(normalizer.shape)} on {normalizer.device}")
        elif not isinstance(normalizer, numbers.Real) or not normalizer > 0:
            raise ValueError(f"normalizer must be a positive number or a tensor, got {normalizer!r}")
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low!r}")
    if not clip_high >= 0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high!r}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1 or None, got {dual_clip!r}")
    if not kl_coef >= 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}")
    if chunk_bytes is not None and (not isinstance(chunk_bytes, numbers.Integral) or chunk_bytes <= 0):
        raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
