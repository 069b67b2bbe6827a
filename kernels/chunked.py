"""The chunked head pass shared by every backend (path A of docs/design/kernels.md).

For each chunk of tokens (sized by a byte budget): one GEMM -> fp32 logits
buffer [C, V]; row stats (Triton or torch); optional merge over a
vocab-parallel group; log-probs; then, when a loss callback is given, its
dL/dlogp turns the same buffer into dL/dlogits and two GEMMs give dX and the
fp32 weight-grad accumulation. No host syncs: chunk bounds depend only on shapes.

Memory (what the pass holds beyond its inputs and outputs):
  - one chunk: C x V fp32 logits, reused in place for dL/dlogits, plus (CUDA, bf16/fp16
    weights) a C x V copy of the gradient in that dtype for the GEMMs. C = budget /
    (V x (4 + grad bytes)), capped at T; the budget is DEFAULT_CHUNK_BYTES (2 GiB on CUDA,
    64 MiB on CPU) or chunk_bytes. So a micro-batch of up to C tokens IS one chunk and its
    whole [T, V] exists at once: C = 2,304 tokens at V = 152,064 with bf16 weights, 3,520
    with fp32. Chunking bounds the logits by the budget, not below it.
  - the weight gradient dW [V, H] in fp32 (when the weight needs a grad), accumulated
    over chunks; grpo.py holds it from the forward pass to the backward pass. At Qwen2.5-7B's
    head (V = 152,064, H = 3,584) that is 2.2 GB, the same order as the chunk.
  - dX [T, H] in the GEMM dtype; the torch row kernels add two [64, V] fp32 temporaries.
The no-grad Triton log-prob path (triton_logprobs.py) holds none of these.
"""
import torch
import torch.distributed as dist

from . import rowwise_torch
from . import stats as S

DEFAULT_CHUNK_BYTES = {"cuda": 2 << 30, "cpu": 64 << 20}
_MM_OUT_DTYPE_OK: dict[str, bool] = {}


def _rows_impl(backend: str):
    if backend == "triton":
        from . import triton_rows
        return triton_rows
    return rowwise_torch


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result. bf16/fp16 on CUDA use cuBLAS' fp32 output (no [C, V]
    low-precision round trip); on CPU inputs are already fp32 here."""
    if a.dtype == torch.float32:
        return a @ b
    key = str(a.device)
    if _MM_OUT_DTYPE_OK.get(key, True):
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):
            _MM_OUT_DTYPE_OK[key] = False
    return (a @ b).float()


def addmm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc (fp32) += a @ b without a [V, H] temporary where cuBLAS can add into fp32 directly."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
        return
    key = str(a.device)
    if _MM_OUT_DTYPE_OK.get(key, True):
        try:
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
            return
        except (RuntimeError, TypeError, NotImplementedError):
            _MM_OUT_DTYPE_OK[key] = False
    acc += (a @ b).float()


def chunk_tokens(T: int, V: int, grad_elem: int, chunk_bytes: int | None, device: torch.device) -> int:
    """Tokens per chunk so that fp32 logits (+ a separate grad buffer of grad_elem bytes) fit the budget."""
    # any accelerator sizes chunks as CUDA does (gadx plan's fake GPU is one; see docs/dry_run.md)
    budget = chunk_bytes or DEFAULT_CHUNK_BYTES["cpu" if device.type == "cpu" else "cuda"]
    c = max(1, budget // (V * (4 + grad_elem)))
    if c >= 64:
        c -= c % 64  # GEMM-friendly
    return min(T, c)


def head_pass(hidden_TH, weight_VH, targets_T, *, temperature, backend, vocab_start=0, group=None,
              want_entropy=False, coef_fn=None, need_dx=False, need_dw=False, chunk_bytes=None, vocab_size=None):
    """Returns (logp_T, entropy_T or None, dX_TH or None, dW_VH fp32 or None).

    coef_fn(start, end, logp_C, entropy_C) -> dL/dlogp_C (fp32) for the chunk, or None for no grad.
    With a group, weight_VH is this rank's vocab shard starting at vocab_start; dX is summed over it.
    Every rank of a group must cut the same chunks (one collective each): chunks are sized from the
    global vocab_size split evenly when given, else from the local shard (equal shards assumed).
    """
    rows = _rows_impl(backend)
    T, H = hidden_TH.shape
    V = weight_VH.shape[0]
    dev = hidden_TH.device
    # On CPU the GEMMs run in fp32 (bf16 CPU GEMMs are slow and add rounding); on an accelerator in the input dtype.
    w_mm = weight_VH if dev.type != "cpu" else weight_VH.float()
    low_prec = w_mm.dtype != torch.float32
    V_chunk = V if (group is None or vocab_size is None) else -(-vocab_size // dist.get_world_size(group))
    C = chunk_tokens(T, V_chunk, w_mm.element_size() if low_prec else 0, chunk_bytes, dev)
    inv_temp = 1.0 / float(temperature)

    logp_T = torch.empty(T, dtype=torch.float32, device=dev)
    ent_T = torch.empty(T, dtype=torch.float32, device=dev) if want_entropy else None
    dX_TH = torch.empty((T, H), dtype=w_mm.dtype, device=dev) if (coef_fn and need_dx) else None
    dW_VH = torch.zeros((V, H), dtype=torch.float32, device=dev) if (coef_fn and need_dw) else None
    tgt_local_T = targets_T.long() - vocab_start
    tgt_local_T = torch.where((tgt_local_T >= 0) & (tgt_local_T < V), tgt_local_T, -1)

    for a in range(0, T, C):
        b = min(T, a + C)
        h_CH = hidden_TH[a:b].to(w_mm.dtype)
        z_CV = mm_fp32(h_CH, w_mm.T)
        tgt_C = tgt_local_T[a:b]
        st_4C = rows.stats(z_CV, tgt_C, inv_temp, want_entropy)
        if group is not None:
            st_4C = S.combine_over_group(st_4C, group)
        lse_C, logp_C, ent_C = S.finalize(st_4C)
        logp_T[a:b] = logp_C
        if want_entropy:
            ent_T[a:b] = ent_C
        if coef_fn is None:
            continue
        coef_C = coef_fn(a, b, logp_C, ent_C)
        if coef_C is None:
            continue
        g_CV = rows.grad(z_CV, tgt_C, lse_C, coef_C, inv_temp, w_mm.dtype)
        del z_CV
        if need_dx:
            torch.mm(g_CV, w_mm, out=dX_TH[a:b])
        if need_dw:
            addmm_fp32_(dW_VH, g_CV.T, h_CH)
        del g_CV
    if dX_TH is not None and group is not None:
        dist.all_reduce(dX_TH, group=group)
    return logp_T, ent_T, dX_TH, dW_VH
