"""Rollout generation: gadx KVCacheSampler vs transformers' ``generate``, same model, same run.

    pytest benchmarks/bench_sampler.py --benchmark-only -s
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_sampler.py   # seconds: batch 4 x 8 new tokens, 1 layer

Tiny random Qwen2 (4 layers, hidden 256, GQA 4/2, vocab 4096), batch 64 prompts
of 16 tokens, 128 new tokens sampled at temperature 0.8 with no EOS stop, so both
sides generate exactly 64 x 128 tokens. Each side runs ``GADX_BENCH_REPEATS``
times (default 1), interleaved, and its fastest run counts (the CPU is shared and
noisy). Correctness check first: greedy output of both engines must agree.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import torch

from gadx.models.config import ModelConfig
from gadx.sampler import KVCacheSampler

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import pick  # noqa: E402

B, PROMPT, NEW = pick(full=(64, 16, 128), smoke=(4, 8, 8))
TEMPERATURE = 0.8
QWEN2 = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=512)
QWEN2.update(pick(full={}, smoke=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1)))


def _hf_generate(model, ids, *, do_sample, n):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=do_sample, temperature=TEMPERATURE
                              if do_sample else None, top_p=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
                              pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]


@pytest.mark.timeout(3600)
def test_sampler_vs_transformers_generate(benchmark, record):
    transformers = pytest.importorskip("transformers", reason="the peer: pip install -e '.[bench]'")
    Qwen2Config, Qwen2ForCausalLM = transformers.Qwen2Config, transformers.Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(**QWEN2, initializer_range=0.1)).eval()
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    sampler = KVCacheSampler(cfg, max_batch=B, max_seq_len=PROMPT + NEW)
    sampler.load_weights(hf.state_dict())
    ids = torch.randint(3, QWEN2["vocab_size"], (B, PROMPT))
    prompts = ids.tolist()

    greedy = sampler.generate(prompts[:4], max_new_tokens=8, temperature=0).responses
    assert greedy == _hf_generate(hf, ids[:4], do_sample=False, n=8).tolist()

    def ours():
        t = time.perf_counter()
        out = sampler.generate(prompts, max_new_tokens=NEW, temperature=TEMPERATURE, seed=0)
        dt = time.perf_counter() - t
        assert out.lengths.tolist() == [NEW] * B
        return dt

    def peer():
        t = time.perf_counter()
        out = _hf_generate(hf, ids, do_sample=True, n=NEW)
        dt = time.perf_counter() - t
        assert out.shape == (B, NEW)
        return dt

    def compare():
        times = {"ours": [], "peer": []}
        for _ in range(int(os.environ.get("GADX_BENCH_REPEATS", "1"))):
            times["ours"].append(ours())
            times["peer"].append(peer())
        return min(times["ours"]), min(times["peer"])

    t_ours, t_peer = benchmark.pedantic(compare, rounds=1, iterations=1)
    tokens = B * NEW
    extra = {"model": "qwen2 4L h256 v4096 GQA4/2", "batch": B, "prompt": PROMPT, "new_tokens": NEW,
             "temperature": TEMPERATURE, "threads": torch.get_num_threads(), "ours_s": t_ours, "peer_s": t_peer}
    ratio = record(group="sampler", name=f"rollout tokens/s, batch {B} x {NEW} new", ours=tokens / t_ours,
                   peer_name="transformers.generate", peer=tokens / t_peer, unit="tok/s", higher_is_better=True,
                   extra=extra)
    benchmark.extra_info.update(extra, speedup=ratio)
    print(f"\nsampler: gadx {tokens / t_ours:.0f} tok/s, transformers {tokens / t_peer:.0f} tok/s, ratio {ratio:.2f}x")
