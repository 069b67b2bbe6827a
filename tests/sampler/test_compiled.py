"""CompiledKVCacheSampler (torch.compile'd decode step) against the eager KVCacheSampler.

One tiny model and one shape: each new (batch bucket, window, sampling settings) compiles once
(inductor's C++ backend on CPU: ~15 CPU s cold for the two greedy graphs here, ~2 s from inductor's
on-disk cache), so the default tests share one module-scoped sampler and its greedy graphs; the
sampled graphs (sort, cumsum, searchsorted: another cold compile) are in the slow tests."""
import re

import pytest
import torch

from gadx.sampler import KVCacheSampler, RolloutEngine, generate_in_chunks
from gadx.sampler.compiled import CompiledKVCacheSampler, _bucket, make_sampler, resolve_compile
from tiny_models import hf_config, sampler_hf

# Lengths 7, 1, 4, 2: left padding up to 7, so masks of pad slots are exercised.
PROMPTS = [[5, 17, 33, 9, 100, 3, 250], [42], [7, 8, 9, 10], [200, 11]]
N = 9  # 7 + 9 = 16 slots: window 16 for every default test


@pytest.fixture(scope="module")
def hf():
    return sampler_hf("qwen2")


@pytest.fixture(scope="module")
def pair(hf):
    """(eager, compiled) samplers over the same weights, max_batch 4 (the batch bucket for 4 and 3 rows is 4)."""
    cfg = hf_config(hf)
    eager = KVCacheSampler(cfg, max_batch=4, max_seq_len=32)
    comp = CompiledKVCacheSampler(cfg, max_batch=4, max_seq_len=32)
    sd = hf.state_dict()
    eager.load_weights(sd)
    comp.load_weights(sd)
    return eager, comp


def _same(a, b):
    assert a.responses == b.responses
    assert a.finished == b.finished and a.lengths.tolist() == b.lengths.tolist()
    for x, y in zip(a.logprobs, b.logprobs):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_greedy_equals_eager(pair):
    eager, comp = pair
    assert isinstance(comp, RolloutEngine)
    want = eager.generate(PROMPTS, max_new_tokens=N, temperature=0)
    got = comp.generate(PROMPTS, max_new_tokens=N, temperature=0)
    _same(want, got)
    assert len({t for r in got.responses for t in r}) > 8  # not a model that repeats one token
    assert comp.compile_s and all(s > 0 for s in comp.compile_s.values())


def test_greedy_eos_padding_and_no_recompile(pair):
    """EOS stops rows as in eager; a smaller batch (3 rows, padded to the bucket of 4), shorter prompts and
    new weights reuse the compiled graphs (error_on_recompile)."""
    eager, comp = pair
    free = eager.generate(PROMPTS, max_new_tokens=N, temperature=0).responses
    eos = free[0][3]
    comp.generate(PROMPTS, max_new_tokens=N, temperature=0)  # compiled already by the previous test, or here
    seen = dict(comp.compile_s)
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = comp.generate(PROMPTS[1:], max_new_tokens=N, temperature=0, eos_ids=[eos])
        _same(eager.generate(PROMPTS[1:], max_new_tokens=N, temperature=0, eos_ids=[eos]), got)
        got = comp.generate([p[:3] for p in PROMPTS], max_new_tokens=5, temperature=0, eos_ids=[eos])
        _same(eager.generate([p[:3] for p in PROMPTS], max_new_tokens=5, temperature=0, eos_ids=[eos]), got)
        other = sampler_hf("qwen2", seed=1).state_dict()
        comp.load_weights(other)
        eager.load_weights(other)
        try:
            _same(eager.generate(PROMPTS, max_new_tokens=N, temperature=0),
                  comp.generate(PROMPTS, max_new_tokens=N, temperature=0))
        finally:
            sd = sampler_hf("qwen2").state_dict()
            comp.load_weights(sd)
            eager.load_weights(sd)
    assert comp.compile_s == seen


@pytest.mark.slow
def test_sampled_equals_eager_and_chunks(pair):
    """Same seed, same uniforms: the compiled sampler draws the eager sampler's tokens, and a call split
    in chunks (generate_in_chunks, rows=) draws what the unsplit call does."""
    eager, comp = pair
    kw = dict(max_new_tokens=N, temperature=0.8, top_k=50, top_p=0.9, seed=3)
    want = eager.generate(PROMPTS, **kw)
    _same(want, comp.generate(PROMPTS, **kw))
    _same(want, generate_in_chunks(comp, PROMPTS, chunk=2, **kw))


def test_buckets_and_modes():
    assert [_bucket(n, 64) for n in (1, 2, 3, 33, 64, 65)] == [1, 2, 4, 64, 64, 64]
    assert _bucket(9, 144, floor=16) == 16 and _bucket(144, 144, floor=16) == 144
    assert resolve_compile("off", "cpu") is False
    with pytest.raises(ValueError, match="'maybe'"):
        resolve_compile("maybe", "cpu")
    assert resolve_compile("auto", "cpu") is False and resolve_compile("on", "cpu") is True
    # the measured rule (docs/performance.md): CUDA compiles (CUDA graphs), CPU decodes eagerly
    assert resolve_compile("auto", "cuda") is True
    hf = sampler_hf("llama")
    cfg = hf_config(hf)
    assert type(make_sampler(cfg, compile="off", max_batch=2, max_seq_len=8)) is KVCacheSampler
    assert type(make_sampler(cfg, compile="auto", max_batch=2, max_seq_len=8)) is KVCacheSampler


def test_auto_falls_back_to_eager_when_compiling_fails(hf, monkeypatch):
    """Under "auto" (CUDA, untested devices) a compile failure must not stop a run: warn, decode eagerly."""
    cfg = hf_config(hf)
    s = CompiledKVCacheSampler(cfg, fallback=True, max_batch=4, max_seq_len=32)
    s.load_weights(hf.state_dict())

    def broken(*a, **k):
        raise RuntimeError("inductor exploded")

    s._step = s._last = broken
    with pytest.warns(UserWarning, match="inductor exploded"):
        out = s.generate(PROMPTS, max_new_tokens=4, temperature=0)
    eager = KVCacheSampler(cfg, max_batch=4, max_seq_len=32)
    eager.load_weights(hf.state_dict())
    _same(eager.generate(PROMPTS, max_new_tokens=4, temperature=0), out)
    assert s.failed
    with pytest.raises(ValueError, match="max_new_tokens"):  # user errors still raise
        s.generate(PROMPTS, max_new_tokens=0)
    s.fallback, s.failed, s._step = False, False, broken
    with pytest.raises(RuntimeError, match="exploded"):
        s.generate(PROMPTS, max_new_tokens=4, temperature=0)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_sampled_distribution_like_eager(family):
    """The eager sampler's distribution checks (tests/sampler/test_sampler.py) on the compiled one:
    log-probs equal a full recompute, top-k / top-p restrict the support, seeds reproduce."""
    from test_sampler import recompute_logits

    hf = sampler_hf(family)
    s = CompiledKVCacheSampler(hf_config(hf), max_batch=8, max_seq_len=64)
    s.load_weights(hf.state_dict())
    for T in (1.0, 0.7):
        out = s.generate(PROMPTS, max_new_tokens=16, temperature=T, seed=3)
        for prompt, resp, lp in zip(PROMPTS, out.responses, out.logprobs):
            ref = (recompute_logits(hf, prompt, resp) / T).log_softmax(-1).gather(-1, torch.tensor(resp)[:, None])
            torch.testing.assert_close(lp, ref.squeeze(-1), atol=1e-5, rtol=1e-5)
    out = s.generate(PROMPTS, max_new_tokens=16, temperature=1.5, top_k=3, seed=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        logits = recompute_logits(hf, prompt, resp)
        assert ((logits > logits.gather(-1, torch.tensor(resp)[:, None])).sum(-1) < 3).all()
    out = s.generate(PROMPTS, max_new_tokens=16, temperature=1.3, top_p=0.6, seed=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        probs = (recompute_logits(hf, prompt, resp) / 1.3).softmax(-1)
        chosen = probs.gather(-1, torch.tensor(resp)[:, None])
        assert ((probs * (probs > chosen)).sum(-1) < 0.6 + 1e-5).all()
    a, b, c = (s.generate(PROMPTS, max_new_tokens=12, seed=k) for k in (7, 7, 8))
    assert a.responses == b.responses and a.responses != c.responses
    # release and reload: the cache comes back zero-filled, same results
    s.release()
    s.load_weights(hf.state_dict())
    assert s.generate(PROMPTS, max_new_tokens=12, seed=7).responses == a.responses


def test_config_key_is_validated():
    from gadx.train.config import TrainConfig, validate

    cfg = TrainConfig()
    assert cfg.parallel.rollout_compile == "auto"
    validate(cfg)
    cfg.parallel.rollout_compile = "sometimes"
    with pytest.raises(ValueError, match="rollout_compile must be auto, on or off, got 'sometimes'"):
        validate(cfg)


def test_per_layer_caches_hold_the_eager_cache(pair):
    """The compiled sampler keeps one K and one V tensor per layer, ``[batch bucket, Hkv, window, D]``,
    written in place by the compiled step: after the same greedy call they hold the eager decoder's cache
    (prompt slots from prefill, then one slot per decoded token); the same shape reuses the same tensors,
    a new shape gets new ones, ``release`` drops them."""
    eager, comp = pair
    cfg = comp.cfg
    eager.generate(PROMPTS, max_new_tokens=N, temperature=0)
    comp.generate(PROMPTS, max_new_tokens=N, temperature=0)
    dec, B, P = comp.decoder, len(PROMPTS), max(map(len, PROMPTS))
    window = _bucket(P + N, comp.max_seq_len, floor=16)
    assert len(dec.k_cache) == len(dec.v_cache) == cfg.num_layers
    for t in dec.k_cache + dec.v_cache:
        assert tuple(t.shape) == (_bucket(B, comp.max_batch), cfg.num_kv_heads, window, cfg.head_dim)
    written = P + N - 1  # the last token is picked, never decoded
    for i in range(cfg.num_layers):
        torch.testing.assert_close(dec.k_cache[i][:B, :, :written], eager.decoder.cache[i, 0, :B, :, :written],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dec.v_cache[i][:B, :, :written], eager.decoder.cache[i, 1, :B, :, :written],
                                   atol=1e-5, rtol=1e-5)
    ptrs = [t.data_ptr() for t in dec.k_cache + dec.v_cache]
    comp.generate(PROMPTS[:3], max_new_tokens=N - 2, temperature=0)  # same bucket (4) and window (16)
    assert [t.data_ptr() for t in dec.k_cache + dec.v_cache] == ptrs
    dec.use_shape(2, 32)
    assert tuple(dec.k_cache[0].shape) == (2, cfg.num_kv_heads, 32, cfg.head_dim)
    assert not any(t.any() for t in dec.k_cache + dec.v_cache)  # a new shape starts zero-filled (no NaN garbage)
    dec.release()
    assert dec.k_cache is None and dec.v_cache is None and dec.cache is None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a cold C++ compile (fx_graph_cache off): minutes on a loaded 2-core host
def test_compiled_step_writes_the_cache_in_place():
    """The point of the per-layer layout: inductor turns each cache write into an in-place ``index_put`` on
    the layer's cache (a graph input), not a scatter of a view back into a big cache (a copy of the whole
    cache per layer per token, which made the step ~20x slower than eager on CPU)."""
    from torch._inductor.utils import run_and_get_code

    from gadx.sampler.compiled import StaticDecoder, _pick_and_decode

    hf = sampler_hf("qwen2")
    cfg = hf_config(hf)
    dec = StaticDecoder(cfg, max_batch=4, max_seq_len=32, device=torch.device("cpu"), dtype=torch.float32)
    from gadx.sampler.decoder import bind_weights

    dec.weights = bind_weights(cfg, hf.state_dict(), device=torch.device("cpu"), dtype=torch.float32)
    dec.use_shape(4, 16)
    torch._dynamo.reset()
    step = torch.compile(_pick_and_decode, dynamic=False)
    args = (torch.randn(4, cfg.vocab_size), None, torch.tensor([3, 4, 5, 6]), torch.tensor([7]),
            torch.zeros(4, 16), 0.0, 0, 1.0)
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):
        _, codes = run_and_get_code(step, dec, *args)
    code = "\n".join(codes)
    assert "index_put" in code
    # the old [L, 2, B, Hkv, S, D] layout compiled to kernels named cpp_fused_..._copy__index_index_put_...
    # that first copy the whole cache into a temporary (greedy: no sampling scatter in this graph)
    assert not re.search(r"copy_|scatter", code), "a cache write is not in place: the cache is copied every step"
