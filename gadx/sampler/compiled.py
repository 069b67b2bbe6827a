"""CompiledKVCacheSampler: the KV-cache sampler with its decode step compiled by ``torch.compile``.

    sampler = make_sampler(cfg, compile="auto", max_batch=64, max_seq_len=512)   # this class or KVCacheSampler
    sampler.load_weights(gadx.models.hf_state_dict(model))
    out = sampler.generate(prompts, max_new_tokens=128, temperature=0.8, eos_ids=[2], seed=0)
    sampler.compile_s          # seconds spent compiling so far, per (batch, cache length, sampling) shape

As gpt-fast does: the cache is static and preallocated, and one step (pick the next token from the
logits, then run the one-token decoder forward over it) is a single compiled graph, so a step costs a
few fused kernels and one Python call instead of ~25 eager ops per layer. Prefill stays eager (one call
per generate). On CPU the graph is inductor's C++/OpenMP code (``mode="default"``); on CUDA it is
replayed as a CUDA graph (``mode="reduce-overhead"``), where launch overhead is what decoding pays.

Fixed shapes, so the step compiles once per shape and never per token:
- the batch is padded up to a bucket (a power of two, at most ``max_batch``); pad rows decode junk that
  is never returned;
- attention reads a fixed window of ``L`` cache slots, the call's prompt + new tokens rounded up to a
  power of two (at most ``max_seq_len``), with slots after the current one masked, instead of the eager
  decoder's growing ``[:slot + 1]`` slice; the cache is zero-filled so that masked slots hold no NaN;
- the slot is a tensor, not a Python int.
A new (batch bucket, window, temperature/top-k/top-p) compiles once more (``compile_s``). The random
draws stay eager (``row_uniforms``, the same numbers as the eager sampler's, chunked or not) and enter
the graph as a tensor.

The cache is one K and one V tensor per layer, each exactly ``[Bb, Hkv, L, D]`` (``StaticDecoder``), so the
step's cache writes are ``index_put_`` on whole graph inputs, which inductor does in place. (The eager
decoder's single ``[layers, 2, B, Hkv, S, D]`` tensor, written through views, compiled to a copy of the
whole cache per layer per token: 0.11x the eager sampler; docs/performance.md.)

Measured on CPU (docs/performance.md; 2-core Xeon, 1 thread, loaded host): 64 x 128 tokens of the tiny
benchmark model in 2.5 CPU s against 2.8 for the eager sampler and 4.9 for ``transformers.generate``; the
step is GEMM-bound there (~3/4 of its time in mm/addmm/bmm), so compiling saves ~10%, while each new
shape costs a C++ compile (cold: 16 CPU s in-process plus the g++ runs; less from inductor's on-disk
cache). Hence "auto" keeps CPU eager; the CUDA (CUDA graphs) mode has not been run.
"""
from __future__ import annotations

import shutil
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from gadx.models.config import ModelConfig
from gadx.sampler.decoder import Decoder, _rope
from gadx.sampler.engine import Rollout
from gadx.sampler.kv_sampler import KVCacheSampler
from gadx.sampler.sampling import row_uniforms, sample_with_uniforms

COMPILE_MODES = ("auto", "on", "off")
# Each distinct (batch bucket, window, sampling settings) is one more graph for the same code; the default
# limit (8) would silently fall back to eager after a few prompt-length buckets.
_RECOMPILE_LIMIT = 64


def _bucket(n: int, cap: int, floor: int = 1) -> int:
    """The smallest power of two >= max(n, floor), capped at ``cap``."""
    b = floor
    while b < n:
        b *= 2
    return min(b, cap)


def can_compile(device: torch.device) -> bool:
    """Whether inductor can generate code here: CUDA (Triton), or a C++ compiler for CPU."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def resolve_compile(mode: str, device: str | torch.device) -> bool:
    """``rollout_compile`` -> compile or not.

    "auto": on CUDA (CUDA graphs remove the per-kernel launch cost that dominates decoding there), eager
    on CPU: there the decode step is GEMM-bound and compiling saves ~10% of a rollout call, while every
    shape of call (batch bucket x window x sampling settings) first costs a C++ compile (cold: 16 CPU s
    in-process plus g++), which short runs and tests never earn back (docs/performance.md, bench_sampler.py's break-even
    row); set "on" for long CPU runs at a fixed shape. "on" compiles
    on CPU too and raises when inductor cannot run here (no C++ compiler); "off" is the eager sampler."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"rollout compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    device = torch.device(device)
    if mode == "off":
        return False
    if mode == "auto":
        return device.type == "cuda"
    if not can_compile(device):
        raise ValueError(f"rollout compile='on' needs a C++ compiler (g++) for inductor on {device}; none found")
    return True


def make_sampler(cfg: ModelConfig, *, compile: str = "auto", **kw) -> KVCacheSampler:
    """A :class:`KVCacheSampler`, or its compiled subclass when ``resolve_compile(compile, device)``.
    Under "auto" a compiled sampler whose compilation fails warns and decodes eagerly from then on."""
    device = kw.get("device", "cpu")
    if resolve_compile(compile, device):
        return CompiledKVCacheSampler(cfg, fallback=compile == "auto", **kw)
    return KVCacheSampler(cfg, **kw)


class StaticDecoder(Decoder):
    """``Decoder`` with one K and one V cache tensor per layer, each exactly ``[Bb, Hkv, L, D]`` for the
    current call's shape (batch bucket ``Bb``, window ``L``), and a decode step of fixed shapes.

    Why per layer and exactly sized: the compiled step writes the new token's K/V into the cache in place
    (``index_put_`` at the slot tensor), which inductor performs in place only on a whole graph input. A
    write through a view of one big ``[L, 2, B, Hkv, S, D]`` tensor (the eager layout) is functionalized into
    a scatter of the view back into the base, i.e. a copy of the whole cache per layer per token; measured,
    that made the compiled step ~20x slower than eager on CPU (docs/performance.md)."""

    k_cache: list[torch.Tensor] | None = None
    v_cache: list[torch.Tensor] | None = None

    def ensure_cache(self) -> None:
        # allocated per call shape by use_shape(); nothing ahead of the first call
        return None

    def use_shape(self, Bb: int, L: int) -> None:
        """Hold caches of ``[Bb, Hkv, L, D]`` per layer, reusing the current ones when the shape matches.

        Zeros, not empty: masked slots get 0 probability, and 0 * NaN garbage would be NaN. On reuse the
        stale entries are finite (they were written by an earlier call): masked slots still contribute 0,
        and every slot a row attends to is rewritten by this call's prefill or decode steps first."""
        cfg = self.cfg
        shape = (Bb, cfg.num_kv_heads, L, cfg.head_dim)
        if self.k_cache is not None and tuple(self.k_cache[0].shape) == shape:
            return
        self.k_cache, self.v_cache = [], []  # drop the old shape's caches before allocating the new ones
        for _ in range(cfg.num_layers):
            self.k_cache.append(torch.zeros(shape, device=self.device, dtype=self.dtype))
            self.v_cache.append(torch.zeros(shape, device=self.device, dtype=self.dtype))

    def release(self) -> None:
        super().release()
        self.k_cache = self.v_cache = None

    def _layer_cache(self, i: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_cache[i][:B], self.v_cache[i][:B]

    def _store_prompt(self, i: int, k_BHPD: torch.Tensor, v_BHPD: torch.Tensor) -> None:
        assert self.k_cache is not None, "use_shape(Bb, L) before prefill"
        B, _, P, _ = k_BHPD.shape
        self.k_cache[i][:B, :, :P] = k_BHPD
        self.v_cache[i][:B, :, :P] = v_BHPD

    def decode_static(self, tok_B: torch.Tensor, pos_B: torch.Tensor, slot_1: torch.Tensor,
                      bias_BL: torch.Tensor) -> torch.Tensor:
        """``Decoder.decode`` at cache slot ``slot_1`` (a 1-element tensor) attending to slots ``[0, L)``
        of which those after ``slot_1`` are masked; ``bias_BL`` masks each row's left padding."""
        cfg, W = self.cfg, self.weights
        B, L = bias_BL.shape
        Hkv, D = cfg.num_kv_heads, cfg.head_dim
        G = cfg.num_heads // Hkv
        cos, sin = self.cos[pos_B][:, None], self.sin[pos_B][:, None]  # [B, 1, D]
        live_L = torch.arange(L, device=bias_BL.device) <= slot_1
        bias = torch.where(live_L[None], bias_BL, float("-inf"))[:, None, None, :]
        x = self._embed(tok_B)
        for i, w in enumerate(W.layers):
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_in, cfg.rms_norm_eps)
            q = _rope(F.linear(h, w.wq, w.bq).view(B, Hkv, G, D), cos[:, None], sin[:, None])
            k = _rope(F.linear(h, w.wk, w.bk).view(B, Hkv, D), cos, sin)
            v = F.linear(h, w.wv, w.bv).view(B, Hkv, D)
            kc, vc = self.k_cache[i], self.v_cache[i]  # [B, Hkv, L, D], whole graph inputs
            kc[:, :, slot_1] = k[:, :, None]  # index_put_: reinplaced by inductor, no copy of the cache
            vc[:, :, slot_1] = v[:, :, None]
            scores = torch.matmul(q, kc.transpose(-1, -2)) * self.scale + bias
            o = torch.matmul(scores.softmax(-1), vc)  # [B, Hkv, G, D]
            x = x + self._sum(F.linear(o.reshape(B, -1), w.wo))
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_post, cfg.rms_norm_eps)
            x = x + self._mlp(w, h)
        x = F.rms_norm(x, (cfg.hidden_size,), W.norm, cfg.rms_norm_eps)
        return F.linear(x, W.lm_head)


def _pick_and_decode(dec: StaticDecoder, logits_BV, u_B1, pos_B, slot_1, bias_BL, temperature: float, top_k: int,
                     top_p: float):
    """One step: the next token of every row (and its log-prob), then the logits after it."""
    tok_B, lp_B = sample_with_uniforms(logits_BV, u_B1, temperature=temperature, top_k=top_k, top_p=top_p)
    return tok_B, lp_B, dec.decode_static(tok_B, pos_B, slot_1, bias_BL)


def _pick(logits_BV, u_B1, temperature: float, top_k: int, top_p: float):
    return sample_with_uniforms(logits_BV, u_B1, temperature=temperature, top_k=top_k, top_p=top_p)


class CompiledKVCacheSampler(KVCacheSampler):
    """:class:`KVCacheSampler` whose per-token step is compiled (see the module docstring); same interface
    and outputs (greedy tokens equal, sampled tokens from the same uniforms)."""

    def __init__(self, cfg: ModelConfig, *, fallback: bool = False, **kw):
        super().__init__(cfg, **kw)
        # fallback: a failure inside torch.compile (an untested device or torch version) warns once and
        # the sampler decodes eagerly from then on, rather than stopping a training run
        self.fallback, self.failed = fallback, False
        cuda = self.device.type == "cuda"
        self.mode = "reduce-overhead" if cuda else "default"
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
        self._step = torch.compile(_pick_and_decode, mode=self.mode, dynamic=False)
        self._last = torch.compile(_pick, mode=self.mode, dynamic=False)
        self._seen: set[tuple] = set()
        self.compile_s: dict[str, float] = {}  # "B64 L256 T0.8 k0 p1.0" -> seconds of its first (compiling) call

    def _make_decoder(self, max_batch: int, max_seq_len: int) -> Decoder:
        return StaticDecoder(self.cfg, max_batch=max_batch, max_seq_len=max_seq_len, device=self.device,
                             dtype=self.dtype)

    def _timed(self, key: tuple, fn, *args):
        """``fn(*args)``, timing the first call of each shape key (the one that compiles)."""
        if key in self._seen:
            return fn(*args)
        t0 = time.perf_counter()
        out = fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._seen.add(key)
        name = f"{key[0]} B{key[1]} L{key[2]} T{key[3]} k{key[4]} p{key[5]}"
        self.compile_s[name] = time.perf_counter() - t0
        return out

    def _eager_generate(self, prompts, **kw) -> Rollout:
        """The eager loop over this decoder (per-layer caches of the whole ``[max_batch, max_seq_len]``)."""
        self.decoder.use_shape(self.max_batch, self.max_seq_len)
        return super().generate(prompts, **kw)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, eos_ids: Sequence[int] = (), seed: int | None = None,
                 rows: tuple[int, int] | None = None) -> Rollout:
        """As :meth:`KVCacheSampler.generate`."""
        kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, eos_ids=eos_ids,
                  seed=seed, rows=rows)
        if self.failed:
            return self._eager_generate(prompts, **kw)
        self._check([list(p) for p in prompts], max_new_tokens, temperature, top_p, top_k, list(eos_ids))
        try:
            return self._generate(prompts, **kw)
        except Exception as e:  # noqa: BLE001 - anything torch.compile raises; user errors were checked above
            if not self.fallback:
                raise
            import warnings

            warnings.warn(f"compiled rollout sampler failed ({type(e).__name__}: {e}); decoding eagerly from now on")
            self.failed = True
            return self._eager_generate(prompts, **kw)

    def _generate(self, prompts, *, max_new_tokens, temperature, top_p, top_k, eos_ids, seed, rows) -> Rollout:
        prompts, eos_E, gen, ids_BP, plen_B, pad_B = self._start(prompts, max_new_tokens, temperature, top_p, top_k,
                                                                 eos_ids, seed, rows)
        dev, (B, P), N = self.device, ids_BP.shape, max_new_tokens
        Bb = _bucket(B, self.max_batch)
        L = _bucket(P + N, self.max_seq_len, floor=16)
        temperature, top_k, top_p = float(temperature), int(top_k), float(top_p)
        key = (Bb, L, temperature, top_k, top_p)
        # Pad rows (B..Bb): prompt length P, no padding mask, token 0 and u = 0.5; their output is dropped.
        pos_B = torch.cat([plen_B, plen_B.new_full((Bb - B,), P)])
        bias_BL = torch.cat([self._pad_bias(pad_B, L), torch.zeros(Bb - B, L, device=dev, dtype=self.dtype)])
        tokens_BN = torch.zeros(B, N, dtype=torch.long, device=dev)
        logp_BN = torch.zeros(B, N, dtype=torch.float32, device=dev)
        done_B = torch.zeros(B, dtype=torch.bool, device=dev)
        self.decoder.use_shape(Bb, L)
        logits = self.decoder.prefill(ids_BP, pad_B)
        logits = torch.cat([logits, logits.new_zeros(Bb - B, logits.shape[1])])
        u_pad = torch.full((Bb - B, 1), 0.5, device=dev)
        slot_1 = torch.empty(1, dtype=torch.long, device=dev)
        sampled = temperature != 0
        steps = N
        for t in range(N):
            u = torch.cat([row_uniforms(B, 1, generator=gen, device=dev, rows=rows), u_pad]) if sampled else None
            if t == N - 1:
                tok, lp = self._timed(("last",) + key, self._last, logits, u, temperature, top_k, top_p)
            else:
                slot_1.fill_(P + t)
                tok, lp, logits = self._timed(("step",) + key, self._step, self.decoder, logits, u, pos_B + t,
                                              slot_1, bias_BL, temperature, top_k, top_p)
                if self.device.type == "cuda":
                    logits = logits.clone()  # a CUDA graph's outputs are overwritten by its next replay
            tok_B = tok[:B]
            tokens_BN[:, t] = tok_B
            logp_BN[:, t] = lp[:B]
            done_B |= torch.isin(tok_B, eos_E)
            if t == N - 1 or ((t + 1) % self.check_every == 0 and bool(done_B.all())):
                steps = t + 1
                break
        return self._finish(tokens_BN, logp_BN, steps, eos_E)
