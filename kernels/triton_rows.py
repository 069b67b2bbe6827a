"""Triton row kernels over one chunk of logits (path A of docs/design/kernels.md).

The chunk's logits come from one cuBLAS GEMM into an fp32 buffer; these
kernels then stream it twice:
  _row_stats_kernel: online max / sum-exp / target logit / entropy sum per row
                     (scaled by 1/temperature on load; the buffer is untouched)
  _row_grad_kernel:  dL/dlogits = coef * inv_temp * (onehot - exp(z - lse)),
                     written in place (fp32) or into a bf16/fp16 buffer for the
                     following dX / dW GEMMs.
Under TRITON_INTERPRET=1 a fixed config is used (no autotune without a
driver) and rows are grouped per program because interpreter cost grows with
the number of programs.
"""
import torch
import triton
import triton.language as tl

from .backend import interpreting

# (BLOCK_T, BLOCK_V, num_warps). One row per program on GPU, Liger-style.
_GPU_CFG = (1, 4096, 8)
_INTERP_CFG = (32, 2048, 1)


def _cfg():
    return _INTERP_CFG if interpreting() else _GPU_CFG


@triton.jit
def _row_stats_kernel(Z, stride_z, TGT, OUT, stride_out, n_rows, V, inv_temp,
                      WANT_ENT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < n_rows
    zrow = Z + rows.to(tl.int64)[:, None] * stride_z
    tgt = tl.load(TGT + rows, mask=rmask, other=-1)
    m = tl.full((BLOCK_T,), float("-inf"), tl.float32)  # -inf, not 0: all-negative rows (verl PR #7439)
    s = tl.zeros((BLOCK_T,), tl.float32)
    u = tl.zeros((BLOCK_T,), tl.float32)
    tg = tl.zeros((BLOCK_T,), tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        valid = rmask[:, None] & (cols < V)[None, :]
        z = tl.load(zrow + cols[None, :], mask=valid, other=float("-inf")).to(tl.float32) * inv_temp
        m_new = tl.where(rmask, tl.maximum(m, tl.max(z, 1)), 0.0)
        delta = m - m_new
        alpha = tl.exp(delta)
        e = tl.exp(z - m_new[:, None])
        if WANT_ENT:  # u is centred on the running max; s > 0 once a tile was seen (-inf * 0 otherwise)
            u = alpha * (u + tl.where(s > 0, delta, 0.0) * s) + tl.sum(e * tl.where(valid, z - m_new[:, None], 0.0), 1)
        s = s * alpha + tl.sum(e, 1)
        tg += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), 1)
        m = m_new
    tl.store(OUT + rows, m, mask=rmask)
    tl.store(OUT + stride_out + rows, s, mask=rmask)
    tl.store(OUT + 2 * stride_out + rows, tg, mask=rmask)
    tl.store(OUT + 3 * stride_out + rows, u, mask=rmask)


@triton.jit
def _row_grad_kernel(Z, stride_z, G, stride_g, TGT, LSE, COEF, n_rows, V, inv_temp,
                     BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < n_rows
    r64 = rows.to(tl.int64)[:, None]
    tgt = tl.load(TGT + rows, mask=rmask, other=-1)
    lse = tl.load(LSE + rows, mask=rmask, other=0.0)
    scale = tl.load(COEF + rows, mask=rmask, other=0.0) * inv_temp
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        valid = rmask[:, None] & (cols < V)[None, :]
        z = tl.load(Z + r64 * stride_z + cols[None, :], mask=valid, other=0.0).to(tl.float32) * inv_temp
        onehot = tl.where(cols[None, :] == tgt[:, None], 1.0, 0.0)
        g = (onehot - tl.exp(z - lse[:, None])) * scale[:, None]
        tl.store(G + r64 * stride_g + cols[None, :], g.to(G.dtype.element_ty), mask=valid)


def stats(z_CV: torch.Tensor, tgt_C: torch.Tensor, inv_temp: float, want_entropy: bool) -> torch.Tensor:
    """Same contract as rowwise_torch.stats; z_CV is left unchanged."""
    C, V = z_CV.shape
    out_4C = torch.empty((4, C), dtype=torch.float32, device=z_CV.device)
    bt, bv, warps = _cfg()
    _row_stats_kernel[(triton.cdiv(C, bt),)](
        z_CV, z_CV.stride(0), tgt_C, out_4C, out_4C.stride(0), C, V, inv_temp,
        WANT_ENT=want_entropy, BLOCK_T=bt, BLOCK_V=bv, num_warps=warps)
    return out_4C


def grad(z_CV: torch.Tensor, tgt_C: torch.Tensor, lse_C: torch.Tensor, coef_C: torch.Tensor,
         inv_temp: float, out_dtype: torch.dtype) -> torch.Tensor:
    """Same contract as rowwise_torch.grad; in place when out_dtype is z's dtype."""
    C, V = z_CV.shape
    g_CV = z_CV if out_dtype == z_CV.dtype else torch.empty((C, V), dtype=out_dtype, device=z_CV.device)
    bt, bv, warps = _cfg()
    _row_grad_kernel[(triton.cdiv(C, bt),)](
        z_CV, z_CV.stride(0), g_CV, g_CV.stride(0), tgt_C, lse_C.contiguous(), coef_C.contiguous(), C, V,
        inv_temp, BLOCK_T=bt, BLOCK_V=bv, num_warps=warps)
    return g_CV
