"""The rollout interface: what the trainer needs from a generation engine.

gadx ships :class:`gadx.sampler.KVCacheSampler`; anything with the same two
methods (a vLLM or SGLang wrapper, say) can replace it::

    engine.load_weights(gadx.models.hf_state_dict(model))   # every step
    rollout = engine.generate(prompt_ids, max_new_tokens=128, temperature=0.8, eos_ids=[2])

Optional, used when present (gadx.sampler.chunked): ``max_batch`` (calls larger than it are split,
each chunk passing ``rows=(first, total)`` to ``generate``) and ``release()`` (free the KV cache and
weights between generations; the trainer calls it after each rollout phase and reloads weights
before the next).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch


@dataclass
class Rollout:
    """One batch of sampled replies, in prompt order.

    ``responses[i]`` ends with its EOS id when ``finished[i]``; ``logprobs[i]`` holds
    ``log_softmax(logits / temperature)`` of each sampled token (float32, length
    ``lengths[i]``), i.e. the sampling policy's log-probs before top-k/top-p.
    """

    responses: list[list[int]]
    logprobs: list[torch.Tensor]
    finished: list[bool]
    lengths: torch.Tensor  # [B] int64


@runtime_checkable
class RolloutEngine(Protocol):
    def load_weights(self, hf_state_dict: Mapping[str, torch.Tensor]) -> None: ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_ids: Sequence[int] = (),
        seed: int | None = None,
    ) -> Rollout: ...
