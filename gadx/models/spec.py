"""Layer specs for the megatron-core GPTModel: Transformer Engine (GPU) or pure PyTorch.

``layer_spec(use_te)`` returns the megatron ``ModuleSpec`` of one decoder layer.
- ``use_te=True``: megatron's TE spec (fused norm+linear GEMMs, FP8-capable) with the core
  attention replaced by ``SDPAttention`` too: TE's DotProductAttention under the causal mask
  type does not take gadx's arbitrary packed-document masks. ValueError when
  transformer_engine is not importable.
- ``use_te=False``: megatron's local spec (ColumnParallelLinear / RowParallelLinear, torch
  RMSNorm) with the core attention replaced by ``SDPAttention`` below, which runs
  flash-attn on a GPU when installed and torch's scaled_dot_product_attention otherwise,
  and takes an explicit boolean mask for packed sequences.
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule

try:  # optional GPU kernel
    from flash_attn import flash_attn_func
except ImportError:  # CPU machines, or GPUs without the wheel
    flash_attn_func = None


def te_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


class SDPAttention(MegatronModule):
    """Core attention with megatron's interface: q [Sq,B,Hq,D], k/v [Sk,B,Hkv,D] -> [Sq,B,Hq*D].

    ``attention_mask`` is megatron's convention (True = masked out), broadcastable to
    [B,1,Sq,Sk]; None means causal, aligned to the end of the keys so a KV-cache decode
    step (Sq < Sk) sees the whole prefix.
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
        assert packed_seq_params is None and attention_bias is None, "pass packed sequences as a mask"
        sq, b, hq, d = query.shape
        sk = key.shape[0]
        dropout_p = self.dropout_p if self.training else 0.0
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
