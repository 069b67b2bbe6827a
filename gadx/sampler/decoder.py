"""A lean Llama/Qwen2 forward over HF-named weights with a static KV cache.

Only what rollouts need: prefill of left-padded prompts and a one-token decode
step, both writing into a cache preallocated as ``[L, 2, B, Hkv, S, D]``.
Weights are the caller's tensors (views of the trainer's parameters when dtype
and device already match), so a weight sync is a dict lookup, not a copy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from gadx.models.config import ModelConfig


@dataclass
class LayerWeights:
    ln_in: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    wo: torch.Tensor
    ln_post: torch.Tensor
    w_gate: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor


@dataclass
class DecoderWeights:
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF parameter name -> shape for every tensor the decoder reads (lm_head only when untied)."""
    H, D, V, I = cfg.hidden_size, cfg.head_dim, cfg.vocab_size, cfg.intermediate_size
    q_out, kv_out = cfg.num_heads * D, cfg.num_kv_heads * D
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, H)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (H,),
            p + "self_attn.q_proj.weight": (q_out, H),
            p + "self_attn.k_proj.weight": (kv_out, H),
            p + "self_attn.v_proj.weight": (kv_out, H),
            p + "self_attn.o_proj.weight": (H, q_out),
            p + "post_attention_layernorm.weight": (H,),
            p + "mlp.gate_proj.weight": (I, H),
            p + "mlp.up_proj.weight": (I, H),
            p + "mlp.down_proj.weight": (H, I),
        }
        if cfg.qkv_bias:
            shapes |= {p + "self_attn.q_proj.bias": (q_out,), p + "self_attn.k_proj.bias": (kv_out,),
                       p + "self_attn.v_proj.bias": (kv_out,)}
    return shapes


def bind_weights(cfg: ModelConfig, sd: Mapping[str, torch.Tensor], *, device: torch.device,
                 dtype: torch.dtype) -> DecoderWeights:
    """Check names/shapes against ``cfg`` and pick the tensors out of ``sd`` (no copy when they already fit)."""
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise ValueError(f"state dict is missing {len(missing)} tensors the model needs, e.g. {missing[:3]}")
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(sd[name].shape)} does not match the config's {shape}")

    def get(name: str) -> torch.Tensor:
        return sd[name].detach().to(device=device, dtype=dtype)

    def opt(name: str) -> torch.Tensor | None:
        return get(name) if cfg.qkv_bias else None

    layers = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        layers.append(LayerWeights(
            ln_in=get(p + "input_layernorm.weight"),
            wq=get(p + "self_attn.q_proj.weight"), wk=get(p + "self_attn.k_proj.weight"),
            wv=get(p + "self_attn.v_proj.weight"),
            bq=opt(p + "self_attn.q_proj.bias"), bk=opt(p + "self_attn.k_proj.bias"),
            bv=opt(p + "self_attn.v_proj.bias"),
            wo=get(p + "self_attn.o_proj.weight"),
            ln_post=get(p + "post_attention_layernorm.weight"),
            w_gate=get(p + "mlp.gate_proj.weight"), w_up=get(p + "mlp.up_proj.weight"),
            w_down=get(p + "mlp.down_proj.weight"),
        ))
    embed = get("model.embed_tokens.weight")
    lm_head = embed if cfg.tie_embeddings else get("lm_head.weight")
    return DecoderWeights(embed=embed, layers=layers, norm=get("model.norm.weight"), lm_head=lm_head)


def rope_tables(cfg: ModelConfig, max_len: int, *, device: torch.device, dtype: torch.dtype):
    """cos/sin ``[S, D]`` in HF's rotate-half layout (frequencies repeated, not interleaved),
    with the checkpoint's RoPE scaling (Llama 3.1 "llama3"), as the trained model computes them."""
    from gadx.models.rope import rope_inv_freq

    inv_freq = rope_inv_freq(cfg).to(device)
    freqs = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Decoder:
    """Prefill + decode over a static cache. All methods assume ``torch.no_grad``."""

    def __init__(self, cfg: ModelConfig, *, max_batch: int, max_seq_len: int, device: torch.device,
                 dtype: torch.dtype):
        self.cfg = cfg
        self.max_batch, self.max_seq_len = max_batch, max_seq_len
        self.weights: DecoderWeights | None = None
        self.device, self.dtype = device, dtype
        self.cache: torch.Tensor | None = None
        self.ensure_cache()
        self.cos, self.sin = rope_tables(cfg, max_seq_len, device=device, dtype=dtype)
        self.scale = cfg.head_dim ** -0.5

    def ensure_cache(self) -> torch.Tensor:
        """The KV cache ``[L, 2, max_batch, Hkv, max_seq_len, D]``, allocated again after a ``release``.

        torch.empty: pages are only touched where generate writes, so a generous max_seq_len is cheap
        on the host; on a GPU it is one block from the caching allocator, which ``release`` hands back."""
        if self.cache is None:
            cfg = self.cfg
            self.cache = torch.empty(cfg.num_layers, 2, self.max_batch, cfg.num_kv_heads, self.max_seq_len,
                                     cfg.head_dim, device=self.device, dtype=self.dtype)
        return self.cache

    def release(self) -> None:
        """Drop the KV cache and the weight references (the gathered copy, when the sampler holds one)."""
        self.cache = None
        self.weights = None

    # Hooks a tensor-parallel decoder overrides (tp_sampler.py): the embedding lookup and the sum of
    # partial outputs of o_proj / down_proj over the TP group.
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weights.embed)

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _mlp(self, w: LayerWeights, h: torch.Tensor) -> torch.Tensor:
        return self._sum(F.linear(F.silu(F.linear(h, w.w_gate)) * F.linear(h, w.w_up), w.w_down))

    def _layer_cache(self, i: int, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s K and V caches of rows ``[0, B)``, ``[B, Hkv, S, D]`` each (views)."""
        return self.cache[i, 0, :B], self.cache[i, 1, :B]

    def _store_prompt(self, i: int, k_BHPD: torch.Tensor, v_BHPD: torch.Tensor) -> None:
        """Write layer ``i``'s prompt keys/values into cache slots ``[0, P)`` of rows ``[0, B)``."""
        B, _, P, _ = k_BHPD.shape
        self.cache[i, 0, :B, :, :P] = k_BHPD
        self.cache[i, 1, :B, :, :P] = v_BHPD

    def prefill(self, ids_BP: torch.Tensor, pad_B: torch.Tensor) -> torch.Tensor:
        """Run left-padded prompts (``pad_B`` leading pads per row), fill cache slots ``[0, P)``.

        Returns the logits of the last prompt token, ``[B, V]``.
        """
        cfg, W = self.cfg, self.weights
        self.ensure_cache()  # again after a release
        B, P = ids_BP.shape
        Hq, Hkv, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        ar = torch.arange(P, device=ids_BP.device)
        valid_BP = ar[None, :] >= pad_B[:, None]
        pos_BP = (ar[None, :] - pad_B[:, None]).clamp_min(0)
        # Pad queries may see themselves so that no softmax row is all -inf (NaNs would leak into the cache).
        causal_PP = ar[None, :] <= ar[:, None]
        mask_B1PP = (causal_PP[None] & (valid_BP[:, None, :] | torch.eye(P, dtype=torch.bool, device=ar.device)))[:, None]
        cos, sin = self.cos[pos_BP][:, None], self.sin[pos_BP][:, None]  # [B, 1, P, D]
        x = self._embed(ids_BP)
        for i, w in enumerate(W.layers):
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_in, cfg.rms_norm_eps)
            q = F.linear(h, w.wq, w.bq).view(B, P, Hq, D).transpose(1, 2)
            k = F.linear(h, w.wk, w.bk).view(B, P, Hkv, D).transpose(1, 2)
            v = F.linear(h, w.wv, w.bv).view(B, P, Hkv, D).transpose(1, 2)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            self._store_prompt(i, k, v)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1PP, scale=self.scale, enable_gqa=True)
            x = x + self._sum(F.linear(o.transpose(1, 2).reshape(B, P, Hq * D), w.wo))
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_post, cfg.rms_norm_eps)
            x = x + self._mlp(w, h)
        x = F.rms_norm(x[:, -1], (cfg.hidden_size,), W.norm, cfg.rms_norm_eps)
        return F.linear(x, W.lm_head)

    def decode(self, tok_B: torch.Tensor, pos_B: torch.Tensor, slot: int, bias_BS: torch.Tensor) -> torch.Tensor:
        """One token per row at cache slot ``slot`` (same for all rows; positions differ by padding).

        ``bias_BS`` is 0 for cache slots a row may attend to and -inf for its pads; only
        ``[:, :slot + 1]`` is read. Returns next-token logits ``[B, V]``.
        """
        cfg, W = self.cfg, self.weights
        B = tok_B.shape[0]
        Hkv, D = cfg.num_kv_heads, cfg.head_dim
        G = cfg.num_heads // Hkv
        n = slot + 1
        cos, sin = self.cos[pos_B][:, None], self.sin[pos_B][:, None]  # [B, 1, D]
        bias = bias_BS[:, None, None, :n]
        x = self._embed(tok_B)
        for i, w in enumerate(W.layers):
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_in, cfg.rms_norm_eps)
            # Query heads grouped by their KV head: [B, Hkv, G, D] attends to [B, Hkv, n, D] by plain bmm,
            # no repeat of the cache.
            q = _rope(F.linear(h, w.wq, w.bq).view(B, Hkv, G, D), cos[:, None], sin[:, None])
            k = _rope(F.linear(h, w.wk, w.bk).view(B, Hkv, D), cos, sin)
            v = F.linear(h, w.wv, w.bv).view(B, Hkv, D)
            kc, vc = self._layer_cache(i, B)
            kc[:, :, slot] = k
            vc[:, :, slot] = v
            scores = torch.matmul(q, kc[:, :, :n].transpose(-1, -2)).mul_(self.scale).add_(bias)
            o = torch.matmul(scores.softmax(-1), vc[:, :, :n])  # [B, Hkv, G, D]
            x = x + self._sum(F.linear(o.reshape(B, -1), w.wo))
            h = F.rms_norm(x, (cfg.hidden_size,), w.ln_post, cfg.rms_norm_eps)
            x = x + self._mlp(w, h)
        x = F.rms_norm(x, (cfg.hidden_size,), W.norm, cfg.rms_norm_eps)
        return F.linear(x, W.lm_head)
