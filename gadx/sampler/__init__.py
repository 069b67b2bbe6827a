"""Rollout generation: the :class:`RolloutEngine` interface and gadx's KV-cache sampler.

    from gadx.sampler import KVCacheSampler, from_pretrained
    sampler = from_pretrained("ckpt/")            # HF folder, safetensors
    out = sampler.generate(prompts, max_new_tokens=128, temperature=0.8, eos_ids=[2], seed=0)

Under tensor parallelism, ``TPKVCacheSampler`` decodes on each rank's shard (tp_sampler.py).
"""
from gadx.sampler.chunked import generate_in_chunks, release
from gadx.sampler.engine import Rollout, RolloutEngine
from gadx.sampler.kv_sampler import KVCacheSampler
from gadx.sampler.loading import from_pretrained, load_safetensors
from gadx.sampler.tp_sampler import TPKVCacheSampler, local_hf_state_dict, shard_hf_state

__all__ = ["KVCacheSampler", "Rollout", "RolloutEngine", "TPKVCacheSampler", "from_pretrained", "load_safetensors",
           "generate_in_chunks", "local_hf_state_dict", "release", "shard_hf_state"]
