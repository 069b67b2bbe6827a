"""Rollout generation: the :class:`RolloutEngine` interface and gadx's KV-cache sampler.

    from gadx.sampler import KVCacheSampler, from_pretrained
    sampler = from_pretrained("ckpt/")            # HF folder, safetensors
    out = sampler.generate(prompts, max_new_tokens=128, temperature=0.8, eos_ids=[2], seed=0)
"""
from gadx.sampler.engine import Rollout, RolloutEngine
from gadx.sampler.kv_sampler import KVCacheSampler
from gadx.sampler.loading import from_pretrained, load_safetensors

__all__ = ["KVCacheSampler", "Rollout", "RolloutEngine", "from_pretrained", "load_safetensors"]
