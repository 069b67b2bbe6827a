"""PyTorch row operations on one chunk of logits (the fallback for the Triton row kernels).

Contract shared with triton_rows.py: ``stats(z_CV, ...)`` may rescale the
buffer in place, and ``grad`` must get the same buffer right after ``stats``;
it overwrites it with dL/dlogits when the output dtype allows.
Temporaries are [ROWS, V] blocks, so the extra memory stays far below one chunk.
"""
import torch

ROWS = 64


def stats(z_CV: torch.Tensor, tgt_C: torch.Tensor, inv_temp: float, want_entropy: bool) -> torch.Tensor:
    """tgt_C: the target's column in this buffer, -1 when it lies outside. Returns stats [4, C]."""
    if inv_temp != 1.0:
        z_CV.mul_(inv_temp)
    C = z_CV.shape[0]
    out_4C = torch.zeros((4, C), dtype=torch.float32, device=z_CV.device)
    m_C, s_C, tg_C, u_C = out_4C.unbind(0)
    torch.amax(z_CV, 1, out=m_C)
    for a in range(0, C, ROWS):
        y_RV = z_CV[a:a + ROWS] - m_C[a:a + ROWS, None]
        e_RV = torch.exp(y_RV)
        torch.sum(e_RV, 1, out=s_C[a:a + ROWS])
        if want_entropy:
            u_C[a:a + ROWS] = torch.linalg.vecdot(e_RV, y_RV)
    has = tgt_C >= 0
    tg_C.copy_(torch.where(has, z_CV.gather(1, tgt_C.clamp(min=0)[:, None])[:, 0], 0.0))
    return out_4C


def grad(z_CV: torch.Tensor, tgt_C: torch.Tensor, lse_C: torch.Tensor, coef_C: torch.Tensor,
         inv_temp: float, out_dtype: torch.dtype) -> torch.Tensor:
    """dL/dlogits = coef * inv_temp * (onehot(target) - softmax(z)), written over z_CV."""
    scale_C = coef_C * inv_temp
    g_CV = z_CV.sub_(lse_C[:, None]).exp_().mul_(-scale_C[:, None])
    has = tgt_C >= 0
    g_CV.scatter_add_(1, tgt_C.clamp(min=0)[:, None], torch.where(has, scale_C, 0.0)[:, None])
    return g_CV if out_dtype == g_CV.dtype else g_CV.to(out_dtype)
