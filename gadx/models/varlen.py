"""Packed variable-length attention: megatron's THD format, no mask.

    psp = varlen_params([96, 96, 40], device)            # host lengths -> cu_seqlens, one copy over
    hidden_1TH = model.hidden(ids_1T, pos_1T, packed_seq_params=psp)

A packed micro-batch is one row of T tokens holding several documents back to back. Instead of
a dense [B,1,T,T] block-diagonal mask (which makes attention compute all T^2 pairs, and rules
out flash-attn and TE's fused kernels), the row travels as megatron's THD format: q/k/v are
[T, heads, D] and ``cu_seqlens`` (int32, [docs+1]) says where each document starts. Each
document attends causally to itself only.

Backends (``varlen_attention``):
- CUDA, fp16/bf16, flash-attn installed: ``flash_attn_varlen_func`` (one kernel for all documents).
  Not verifiable without a GPU (the lent GPU image has no flash-attn either): tested here only
  through its CPU twin below.
- otherwise (CPU; GPUs without flash-attn; the plan's fake GPU): torch SDPA per document with
  ``is_causal=True`` and no mask, so torch may pick its flash / memory-efficient kernels on a GPU.
  Consecutive documents of equal length are one batched call (a view, no copy): rollouts that hit
  the length cap, and the plan's worst case, are then one call per micro-batch.

RoPE: gadx computes per-token angles from position ids (which restart per document). megatron's
own THD RoPE without TE's fused kernel reads ``cu_seqlens`` back to the host (``.tolist()``)
twice per layer, a device sync each on a GPU, and a value fake tensors cannot give. So the
model hands the decoder no rotary embedding on the packed path and puts the angles on the
params (``rotary_T11D``); the core attention applies them with megatron's own
``apply_rotary_pos_emb`` in its per-token (bshd) form: the same arithmetic as the unpacked path.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams

try:  # optional GPU kernel
    from flash_attn import flash_attn_varlen_func
except ImportError:  # CPU machines, or GPUs without the wheel
    flash_attn_varlen_func = None


@dataclass
class VarlenParams(PackedSeqParams):
    """megatron's ``PackedSeqParams`` (qkv_format "thd") plus what gadx's core attention needs:
    the document lengths on the host (the per-document path slices by them without reading a
    device tensor) and the per-token RoPE angles (set by the model's forward, see module doc)."""

    doc_lens: tuple[int, ...] = ()
    rotary_T11D: torch.Tensor | None = None


def varlen_params(doc_lens: list[int], device: torch.device | str = "cpu") -> VarlenParams:
    """THD params of one packed row whose documents have ``doc_lens`` tokens, in order. Built from
    host integers, so no device value is read; ``cu_seqlens`` is copied to ``device`` once."""
    if not doc_lens or any(n < 1 for n in doc_lens):
        raise ValueError(f"every packed document needs at least one token, got lengths {list(doc_lens)}")
    cu = [0]
    for n in doc_lens:
        cu.append(cu[-1] + n)
    cu_seqlens = torch.tensor(cu, dtype=torch.int32)
    device = torch.device(device)
    if device.type != "cpu":
        cu_seqlens = cu_seqlens.to(device, non_blocking=True)
    longest = max(doc_lens)
    return VarlenParams(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                        max_seqlen_q=longest, max_seqlen_kv=longest, doc_lens=tuple(int(n) for n in doc_lens))


def doc_lens_from_ids(doc_ids_T: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal doc ids (a host read: for callers that hold doc ids, not lengths)."""
    ids = doc_ids_T.tolist()
    lens = [1]
    for a, b in zip(ids, ids[1:]):
        if a == b:
            lens[-1] += 1
        else:
            lens.append(1)
    return lens


def doc_lens_of(params: PackedSeqParams) -> list[int]:
    """Document lengths of THD params: the host copy, or (plain megatron params) one host read."""
    lens = getattr(params, "doc_lens", ())
    if lens:
        return list(lens)
    cu = params.cu_seqlens_q
    return (cu[1:] - cu[:-1]).tolist()


def as_varlen(params: PackedSeqParams, **changes) -> VarlenParams:
    """``params`` as ``VarlenParams`` (a copy; megatron's plain params are accepted too) with ``changes``."""
    if isinstance(params, VarlenParams):
        return replace(params, **changes)
    base = {f.name: getattr(params, f.name) for f in fields(PackedSeqParams)}
    return VarlenParams(**base, **changes)


def _runs(lens: list[int]) -> list[tuple[int, int]]:
    """(length, count) of consecutive equal lengths."""
    out: list[tuple[int, int]] = []
    for n in lens:
        if out and out[-1][0] == n:
            out[-1] = (n, out[-1][1] + 1)
        else:
            out.append((n, 1))
    return out


def apply_rope(x_THD: torch.Tensor, rotary_T11D: torch.Tensor, config) -> torch.Tensor:
    """megatron's RoPE on [T, heads, D] with per-token angles (as a batch of one)."""
    from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb

    return apply_rotary_pos_emb(x_THD.unsqueeze(1), rotary_T11D, config=config).squeeze(1)


FLASH, PER_DOC = "flash_attn_varlen_func", "per-document torch SDPA"
# calls per backend in this process (host counters, no sync): what the GPU check reports as "ran"
backend_calls: Counter[str] = Counter()


def backend(device: torch.device | str, dtype: torch.dtype) -> str:
    """The kernel ``varlen_attention`` runs for q/k/v on ``device`` in ``dtype`` (for logs and GPU reports)."""
    if flash_attn_varlen_func is not None and torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return FLASH
    return PER_DOC


def varlen_attention(q_THD: torch.Tensor, k_THD: torch.Tensor, v_THD: torch.Tensor, params: PackedSeqParams, *,
                     softmax_scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention within each packed document: q [T,Hq,D], k/v [T,Hkv,D] -> [T, Hq*D]."""
    T, hq, d = q_THD.shape
    kernel = backend(q_THD.device, q_THD.dtype)
    backend_calls[kernel] += 1
    if kernel == FLASH:
        out_THD = flash_attn_varlen_func(
            q_THD, k_THD, v_THD, params.cu_seqlens_q, params.cu_seqlens_kv,
            params.max_seqlen_q, params.max_seqlen_kv, dropout_p=dropout_p,
            softmax_scale=softmax_scale, causal=True,
        )
        return out_THD.reshape(T, hq * d)
    gqa = hq != k_THD.shape[1]
    outs, start = [], 0
    for n_tok, n_docs in _runs(doc_lens_of(params)):
        end = start + n_tok * n_docs

        def docs(x_THD):  # [n*L, H, D] -> [n, H, L, D], a view
            return x_THD[start:end].unflatten(0, (n_docs, n_tok)).transpose(1, 2)

        o_NHLD = F.scaled_dot_product_attention(
            docs(q_THD), docs(k_THD), docs(v_THD), dropout_p=dropout_p, is_causal=True,
            scale=softmax_scale, enable_gqa=gqa,
        )
        outs.append(o_NHLD.transpose(1, 2).reshape(end - start, hq * d))
        start = end
    assert start == T, f"packed documents cover {start} tokens, the row has {T}"
    return outs[0] if len(outs) == 1 else torch.cat(outs)
