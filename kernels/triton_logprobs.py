"""Fully fused no-grad token log-probs (path B of docs/design/kernels.md): [T, V] never exists.

Grid = (token blocks, vocab splits). A program computes logits tiles
z = (h @ w^T) / temperature in registers (tl.dot over H), folds them into the
online stats of stats.py and writes its split's partials; the splits are then
merged by stats.combine in a fixed order, so results are deterministic.
Splitting V keeps the GPU full when T is small (sampler, short batches).

Precision: fp32 inputs use IEEE fp32 dots (no TF32) so old/ref log-probs are
not noisier than the loss path. Under TRITON_INTERPRET=1, tl.dot on bf16 is
wrong (it multiplies raw bit patterns, upstream issue 11584), so tiles are
cast to fp32 before the dot there (CAST_F32); the bf16->fp32 cast is exact.
"""
import functools

import torch
import triton
import triton.language as tl

from . import stats as S
from .backend import interpreting

# (BLOCK_T, BLOCK_V, BLOCK_K, num_warps, num_stages)
_GPU_CFG = (64, 128, 64, 4, 3)
_INTERP_CFG = (64, 1024, 128, 1, 1)


@triton.jit
def _fused_logprobs_kernel(X, W, TGT, PART, T, V, H, stride_x, stride_w, stride_pn, stride_pk,
                           v_per_split, inv_temp,
                           WANT_ENT: tl.constexpr, CAST_F32: tl.constexpr, IEEE: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_t = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < T
    r64 = rows.to(tl.int64)
    tgt = tl.load(TGT + rows, mask=rmask, other=-1)
    v_lo = split * v_per_split
    v_hi = tl.minimum(v_lo + v_per_split, V)
    m = tl.full((BLOCK_T,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_T,), tl.float32)
    u = tl.zeros((BLOCK_T,), tl.float32)
    tg = tl.zeros((BLOCK_T,), tl.float32)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < v_hi
        acc = tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < H
            x = tl.load(X + r64[:, None] * stride_x + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            w = tl.load(W + cols.to(tl.int64)[None, :] * stride_w + ks[:, None],
                        mask=cmask[None, :] & kmask[:, None], other=0.0)
            if CAST_F32:
                x = x.to(tl.float32)
                w = w.to(tl.float32)
            if IEEE:
                acc = tl.dot(x, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(x, w, acc)
        valid = rmask[:, None] & cmask[None, :]
        z = tl.where(valid, acc * inv_temp, float("-inf"))
        m_new = tl.where(rmask, tl.maximum(m, tl.max(z, 1)), 0.0)
        delta = m - m_new
        alpha = tl.exp(delta)
        e = tl.exp(z - m_new[:, None])
        if WANT_ENT:  # u is centred on the running max; s > 0 once a tile was seen (-inf * 0 otherwise)
            u = alpha * (u + tl.where(s > 0, delta, 0.0) * s) + tl.sum(e * tl.where(valid, z - m_new[:, None], 0.0), 1)
        s = s * alpha + tl.sum(e, 1)
        tg += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), 1)
        m = m_new
    base = PART + split * stride_pn + rows
    tl.store(base, m, mask=rmask)
    tl.store(base + stride_pk, s, mask=rmask)
    tl.store(base + 2 * stride_pk, tg, mask=rmask)
    tl.store(base + 3 * stride_pk, u, mask=rmask)


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def fused_stats(hidden_TH: torch.Tensor, weight_VH: torch.Tensor, tgt_T: torch.Tensor, inv_temp: float,
                want_entropy: bool, *, n_splits: int | None = None) -> torch.Tensor:
    """Stats [4, T] of this weight's vocab slice. tgt_T: target column in weight_VH, -1 if outside."""
    T, H = hidden_TH.shape
    V = weight_VH.shape[0]
    hidden_TH, weight_VH = hidden_TH.contiguous(), weight_VH.contiguous()
    interp = interpreting()
    bt, bv, bk, warps, stages = _INTERP_CFG if interp else _GPU_CFG
    n_tb = triton.cdiv(T, bt)
    max_splits = triton.cdiv(V, bv)
    if n_splits is None:
        n_splits = 2 if interp else triton.cdiv(2 * _sm_count(hidden_TH.device.index or 0), n_tb)
    n_splits = max(1, min(n_splits, max_splits))
    v_per_split = triton.cdiv(triton.cdiv(V, n_splits), bv) * bv
    n_splits = triton.cdiv(V, v_per_split)  # no empty splits
    part_N4T = torch.empty((n_splits, 4, T), dtype=torch.float32, device=hidden_TH.device)
    _fused_logprobs_kernel[(n_tb, n_splits)](
        hidden_TH, weight_VH, tgt_T, part_N4T, T, V, H, hidden_TH.stride(0), weight_VH.stride(0),
        part_N4T.stride(0), part_N4T.stride(1), v_per_split, inv_temp,
        WANT_ENT=want_entropy, CAST_F32=interp, IEEE=hidden_TH.dtype == torch.float32,
        BLOCK_T=bt, BLOCK_V=bv, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return S.combine(part_N4T)
