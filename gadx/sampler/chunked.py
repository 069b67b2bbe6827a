"""Generate calls larger than the sampler's KV cache, chunk by chunk, and freeing the sampler between phases.

    roll = generate_in_chunks(engine, prompts, max_new_tokens=256, temperature=0.8, eos_ids=[2], seed=7)
    release(engine)   # KV cache and gathered weights gone until the next load_weights + generate

The KV cache has ``max_batch`` rows, sized by the GAD step's rollout call (gadx.train.env), not by
the largest call anyone makes (the held-out check, an evaluation). Larger calls run in chunks of
``max_batch`` prompts, each chunk told its rows of the whole call (``generate(..., rows=)``), so every
row draws the random numbers it would draw unsplit: the same seed gives the same samples chunked or
not (greedy trivially), up to floating-point differences of running a row in a batch of another
size or padding (none on the CPU tests; a GPU's batched kernels may differ in the last bits).
"""
from __future__ import annotations

from typing import Sequence

import torch

from gadx.sampler.engine import Rollout


def generate_in_chunks(engine, prompts: Sequence[Sequence[int]], *, chunk: int | None = None, **kw) -> Rollout:
    """``engine.generate(prompts, **kw)`` in chunks of ``chunk`` prompts (default: ``engine.max_batch``).

    An engine without ``max_batch`` (a vLLM / SGLang wrapper manages its own memory) gets one call."""
    chunk = chunk or getattr(engine, "max_batch", None)
    B = len(prompts)
    if chunk is None or B <= chunk:
        return engine.generate(prompts, **kw)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    parts = [engine.generate(prompts[c : c + chunk], rows=(c, B), **kw) for c in range(0, B, chunk)]
    return Rollout(responses=[r for p in parts for r in p.responses],
                   logprobs=[lp for p in parts for lp in p.logprobs],
                   finished=[f for p in parts for f in p.finished],
                   lengths=torch.cat([p.lengths for p in parts]))


def release(engine) -> None:
    """Free what the engine holds between generations (``engine.release()``, when it has one)."""
    fn = getattr(engine, "release", None)
    if fn is not None:
        fn()
