"""Layer specs for the megatron-core GPTModel: Transformer Engine (GPU) or pure PyTorch.

``layer_spec(use_te)`` returns the megatron ``ModuleSpec`` of one decoder layer.
- ``use_te=True``: megatron's TE spec (fused norm+linear GEMMs, FP8-capable) with the core
  attention replaced by ``SDPAttention`` too, so both specs run the same attention code on
  packed micro-batches (``gadx.models.varlen``: THD, cu_seqlens, no mask). TE's own
  DotProductAttention is not used: gadx's packed path applies RoPE inside the core attention
  (see varlen.py), which TE's module does not. UNVERIFIED without a GPU: the TE spec and the
  flash-attn kernels are never run on this project's CPU machines; the CPU tests run the same
  SDPAttention code on its per-document path. ValueError when transformer_engine is not
  importable.
- ``use_te=False``: megatron's local spec (ColumnParallelLinear / RowParallelLinear, torch
  RMSNorm) with the core attention replaced by ``SDPAttention`` below.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule

from gadx.models.varlen import apply_rope, varlen_attention

try:  # optional GPU kernel
    from flash_attn import flash_attn_func
except ImportError:  # CPU machines, or GPUs without the wheel
    flash_attn_func = None


def te_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


class SDPAttention(MegatronModule):
    """Core attention with megatron's interface: q [Sq,B,Hq,D], k/v [Sk,B,Hkv,D] -> [Sq,B,Hq*D].

    Packed micro-batches (``packed_seq_params``, megatron's THD format: q [T,Hq,D], k/v
    [T,Hkv,D] -> [T,Hq*D]): causal attention within each document, no mask
    (``gadx.models.varlen.varlen_attention``: flash-attn's varlen kernel on a GPU that has it,
    per-document torch SDPA otherwise), after RoPE with the params' per-token angles.

    Otherwise ``attention_mask`` is megatron's convention (True = masked out), broadcastable to
    [B,1,Sq,Sk]; None means causal, aligned to the end of the keys so a KV-cache decode
    step (Sq < Sk) sees the whole prefix. flash-attn (``flash_attn_func``) runs when installed
    on a GPU for the unmasked square case, torch's scaled_dot_product_attention otherwise.
    """

    def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                 softmax_scale=None, cp_comm_type=None, pg_collection=None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism")
        self.softmax_scale = softmax_scale
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        assert attention_bias is None, "attention_bias is not supported"
        dropout_p = self.dropout_p if self.training else 0.0
        if packed_seq_params is not None:
            return self._packed(query, key, value, attention_mask, packed_seq_params, dropout_p)
        sq, b, hq, d = query.shape
        sk = key.shape[0]
        if (
            flash_attn_func is not None
            and query.is_cuda
            and query.dtype in (torch.float16, torch.bfloat16)
            and attention_mask is None
            and sq == sk
        ):
            out = flash_attn_func(
                query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1),
                dropout_p=dropout_p, softmax_scale=self.softmax_scale, causal=True,
            )  # [B,Sq,Hq,D]
            return out.transpose(0, 1).reshape(sq, b, hq * d)
        q_BHSD = query.permute(1, 2, 0, 3)
        k_BHSD = key.permute(1, 2, 0, 3)
        v_BHSD = value.permute(1, 2, 0, 3)
        is_causal, mask = False, None
        if attention_mask is not None:
            mask = ~attention_mask  # SDPA: True = attend
        elif sq == sk:
            is_causal = True
        else:
            offset = sk - sq
            mask = torch.ones(sq, sk, dtype=torch.bool, device=query.device).tril(diagonal=offset)
        out_BHSD = F.scaled_dot_product_attention(
            q_BHSD, k_BHSD, v_BHSD, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=self.softmax_scale, enable_gqa=hq != k_BHSD.shape[1],
        )
        return out_BHSD.permute(2, 0, 1, 3).reshape(sq, b, hq * d)

    def _packed(self, q_THD, k_THD, v_THD, attention_mask, params, dropout_p):
        if attention_mask is not None:
            raise ValueError("packed sequences take no attention mask (the documents are in packed_seq_params)")
        if params.qkv_format != "thd":
            raise ValueError(f"packed_seq_params.qkv_format must be 'thd', got {params.qkv_format!r}")
        rotary_T11D = getattr(params, "rotary_T11D", None)
        if rotary_T11D is not None:
            q_THD = apply_rope(q_THD, rotary_T11D, self.config)
            k_THD = apply_rope(k_THD, rotary_T11D, self.config)
        return varlen_attention(q_THD, k_THD, v_THD, params, softmax_scale=self.softmax_scale, dropout_p=dropout_p)


def layer_spec(use_te: bool = False):
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te:
        if not te_available():
            raise ValueError(
                "use_te=True but transformer_engine is not importable: install the gpu extra "
                "(pip install 'gadx[gpu]') or build with use_te=False"
            )
        spec = specs.get_gpt_layer_with_transformer_engine_spec()
    else:
        spec = specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec
