"""No-grad per-token log-probs of target ids (old policy, reference policy, sampler).

    logp_T = token_logprobs(hidden_TH, weight_VH, targets_T, temperature=1.0)
    logp_T, entropy_T = token_logprobs(..., return_entropy=True)

Triton backend: the fully fused kernel (triton_logprobs.py, no [T, V] at all).
Torch backend: the chunked head pass (chunked.py). Results are fp32, <= 0,
detached (this is the no-grad path; grpo_loss is the differentiable one).
"""
import torch

from . import stats as S
from .backend import resolve_backend
from .chunked import head_pass
from .checks import check_head


def _logprobs(hidden, weight, targets, *, temperature, return_entropy, backend, chunk_bytes, vocab_start, group,
              vocab_size=None):
    name = resolve_backend(backend, hidden.device)
    with torch.no_grad():
        if name == "triton":
            from .triton_logprobs import fused_stats
            V = weight.shape[0]
            tgt = targets.long() - vocab_start
            tgt = torch.where((tgt >= 0) & (tgt < V), tgt, -1)
            st_4T = fused_stats(hidden, weight, tgt, 1.0 / float(temperature), return_entropy)
            if group is not None:
                st_4T = S.combine_over_group(st_4T, group)
            _, logp_T, ent_T = S.finalize(st_4T)
        else:
            logp_T, ent_T, _, _ = head_pass(hidden, weight, targets, temperature=temperature, backend=name,
                                            vocab_start=vocab_start, group=group, want_entropy=return_entropy,
                                            chunk_bytes=chunk_bytes, vocab_size=vocab_size)
    return (logp_T, ent_T) if return_entropy else logp_T


def token_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False, backend=None,
                   chunk_bytes=None):
    """hidden [T, H], weight [V, H] (same float dtype/device), targets [T] int -> logp [T] fp32
    of softmax(hidden @ weight.T / temperature) at the targets (+ entropy [T] when asked)."""
    check_head(hidden, weight, targets, temperature)
    return _logprobs(hidden, weight, targets, temperature=temperature, return_entropy=return_entropy,
                     backend=backend, chunk_bytes=chunk_bytes, vocab_start=0, group=None)


def vocab_parallel_token_logprobs(hidden, weight_shard, targets, *, vocab_start, group, temperature=1.0,
                                  return_entropy=False, backend=None, chunk_bytes=None, vocab_size=None):
    """token_logprobs with the head split over V across `group`: weight_shard [V_local, H] holds
    global ids [vocab_start, vocab_start + V_local); targets are global ids; hidden is replicated.
    Each rank reduces its shard; one all-gather of 4*T floats merges the shards (never [T, V]).
    vocab_size: the global (padded) vocab; needed when shards differ in size (see chunked.head_pass)."""
    check_head(hidden, weight_shard, targets, temperature, vocab_start=vocab_start, vocab_size=vocab_size)
    return _logprobs(hidden, weight_shard, targets, temperature=temperature, return_entropy=return_entropy,
                     backend=backend, chunk_bytes=chunk_bytes, vocab_start=vocab_start, group=group,
                     vocab_size=vocab_size)
