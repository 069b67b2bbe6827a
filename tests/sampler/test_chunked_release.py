"""Calls larger than the KV cache run in chunks with the same per-row samples; release() frees the sampler."""
import gc
import weakref

import pytest
import torch

from gadx.sampler import KVCacheSampler, TPKVCacheSampler, generate_in_chunks, release
from gadx.train.config import load_config
from gadx.train.step import Batch, StepContext, _rollout
from tiny_models import hf_config, sampler_hf

# 7 prompts of different lengths: the chunks of 3 have different left padding than the whole call
PROMPTS = [[5, 17, 33, 9, 100, 3, 250], [42], [7, 8, 9, 10], [200, 11], [1, 2, 3], [99] * 9, [64, 65]]
SETTINGS = [dict(temperature=0),
            dict(temperature=0.9, seed=3),
            dict(temperature=1.3, top_k=7, top_p=0.9, seed=11)]


@pytest.fixture(scope="module")
def model():
    return sampler_hf("qwen2")


def sampler(model, max_batch, cls=KVCacheSampler, **kw):
    s = cls(hf_config(model), max_batch=max_batch, max_seq_len=48, **kw)
    s.load_weights(model.state_dict())
    return s


def eos_of(model):
    """An id the random model emits now and then, so some rows stop early and others run to the end."""
    roll = sampler(model, 8).generate(PROMPTS, max_new_tokens=16, temperature=0.9, seed=0)
    counts = torch.bincount(torch.tensor([t for r in roll.responses for t in r[2:]]))
    return int(counts.argmax())


@pytest.mark.parametrize("cls", [KVCacheSampler, TPKVCacheSampler])
@pytest.mark.parametrize("kw", SETTINGS, ids=["greedy", "sampled", "top_k_top_p"])
def test_chunks_give_the_unchunked_samples(model, kw, cls):
    extra = {"tp_group": None} if cls is TPKVCacheSampler else {}
    eos = [eos_of(model)]
    whole = sampler(model, 8, cls, **extra).generate(PROMPTS, max_new_tokens=16, eos_ids=eos, **kw)
    small = sampler(model, 3, cls, **extra)
    with pytest.raises(ValueError, match="max_batch=3"):  # one call is still bounded by the cache
        small.generate(PROMPTS, max_new_tokens=16, eos_ids=eos, **kw)
    parts = generate_in_chunks(small, PROMPTS, max_new_tokens=16, eos_ids=eos, **kw)
    assert parts.responses == whole.responses
    assert parts.finished == whole.finished
    assert torch.equal(parts.lengths, whole.lengths)
    for a, b in zip(parts.logprobs, whole.logprobs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert any(parts.finished) and not all(parts.finished)  # early stops and full-length rows both exercised
    if kw.get("temperature"):  # the chunks really are sampled differently from a naive split's
        naive = [t for c in range(0, 7, 3)
                 for t in small.generate(PROMPTS[c:c + 3], max_new_tokens=16, eos_ids=eos, **kw).responses]
        assert naive != whole.responses


def test_rows_out_of_range_is_an_error(model):
    with pytest.raises(ValueError, match="rows"):
        sampler(model, 3).generate(PROMPTS[:3], max_new_tokens=4, rows=(5, 7))


def test_release_frees_cache_and_weights(model):
    s = sampler(model, 4)
    first = s.generate(PROMPTS[:4], max_new_tokens=8, temperature=0.8, seed=1)
    cache = weakref.ref(s.decoder.cache)
    embed = weakref.ref(s.decoder.weights.embed)  # a weight the sampler holds (a copy when dtypes differ: here not)
    s.release()
    gc.collect()
    assert cache() is None  # nothing else keeps the KV cache alive
    assert s.decoder.cache is None and s.decoder.weights is None
    with pytest.raises(ValueError, match="load_weights"):
        s.generate(PROMPTS[:4], max_new_tokens=8)
    del embed
    s.load_weights(model.state_dict())
    again = s.generate(PROMPTS[:4], max_new_tokens=8, temperature=0.8, seed=1)
    assert again.responses == first.responses  # re-created on demand, same results
    assert s.decoder.cache is not None


def test_release_drops_a_converted_weight_copy(model):
    """A bf16 sampler over fp32 weights holds its own converted copy (as the trainer's gathered one): freed."""
    s = sampler(model, 2, dtype=torch.bfloat16)
    s.generate(PROMPTS[:2], max_new_tokens=4, temperature=0)
    w = weakref.ref(s.decoder.weights.layers[0].wq)
    release(s)
    gc.collect()
    assert w() is None


def test_tp_memory_bytes_after_release(model):
    s = sampler(model, 2, TPKVCacheSampler, tp_group=None)
    assert s.memory_bytes()["kv_cache"] > 0
    s.release()
    assert s.memory_bytes() == {"weights": 0, "kv_cache": 0}


def test_gad_rollout_releases_the_sampler(model):
    """The GAD step's rollout phase ends with the KV cache and the weights freed; the next sync restores them."""
    cfg, _ = load_config(["--set", "stages.n_samples=2", "--set", "stages.max_response_len=6",
                          "--set", "stages.rollout_prompts_per_call=2"])
    s = sampler(model, 4)
    sd = model.state_dict()
    ctx = StepContext(student=None, disc=None, ref=None, engine=s, sync_weights=lambda: s.load_weights(sd),
                      eos_ids=[], stages=cfg.stages, budget=0, dims=None)
    batch = Batch(prompts=PROMPTS[:4], teacher=[[1]] * 4, teacher_finished=[True] * 4, global_prompts=4, first=0)
    _, responses, _ = _rollout(ctx, batch, 0, 2)
    assert len(responses) == 8 and all(len(r) == 6 for r in responses)
    assert s.decoder.cache is None and s.decoder.weights is None
    _, again, _ = _rollout(ctx, batch, 0, 2)
    assert again == responses
