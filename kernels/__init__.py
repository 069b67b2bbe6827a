"""Fused log-prob and GRPO-loss kernels (installed as ``gadx.kernels``).

    from gadx.kernels import token_logprobs, grpo_loss
    logp_T = token_logprobs(hidden_TH, head_weight_VH, targets_T, temperature=1.0)
    loss, metrics = grpo_loss(hidden_TH, head_weight_VH, targets_T, adv_T, old_T, ref_T, mask_T,
                              normalizer=n_valid_tokens)

Memory: token_logprobs' Triton path never forms [T, V]; grpo_loss holds one chunk of fp32
logits (a byte budget, 2 GiB on CUDA: below ~2,300 tokens at V = 152K that is all of [T, V])
plus an fp32 [V, H] weight gradient from forward to backward (grpo.py, chunked.py).
Backends: Triton on CUDA, Triton's interpreter under TRITON_INTERPRET=1, chunked
PyTorch otherwise; force with backend="triton"|"torch" or GADX_KERNEL_BACKEND.
Vocab-parallel (tensor-parallel head) variants take the shard's vocab_start and
the process group. The float64 references live in gadx.kernels.reference (tests).
"""
from .backend import resolve_backend
from .grpo import grpo_loss, vocab_parallel_grpo_loss
from .logprobs import token_logprobs, vocab_parallel_token_logprobs

__all__ = ["token_logprobs", "grpo_loss", "vocab_parallel_token_logprobs", "vocab_parallel_grpo_loss",
           "resolve_backend"]
