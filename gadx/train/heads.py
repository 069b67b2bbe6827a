"""LM-head losses on last-stage hidden states, the same call at every tensor-parallel size.

    logp_T, ent_T = token_logprobs(model, hidden_TH, targets_T, temperature=0.8)   # no grad
    loss, m = grpo_loss(model, hidden_TH, targets_T, adv_T, old_T, ref_T, mask_T, normalizer=n, ...)
    nll_sum = nll_sum(model, hidden_TH, targets_T, mask_T)                         # SFT, with grad
    lp_N = seq_logprob_sums(model, hidden_TH, targets_T, mask_T, doc_T, N, temperature=0.8)   # with grad

At TP=1 these are gadx.kernels' fused kernels (and a chunked CE for SFT). At TP>1
``model.head_weight`` is this rank's vocab shard: the vocab-parallel kernels merge
the shards (and all-reduce d(hidden) themselves), and only the shard's real rows
(``model.vocab_range``) take part, so the zero pad rows megatron adds to make V
divisible by TP never enter the softmax. The SFT CE under TP is megatron's
vocab_parallel_cross_entropy on chunked local logits, the pad columns set to -inf.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gadx import kernels
from gadx.models.vocab import padded_vocab_size


def _shard(model) -> tuple[torch.Tensor, dict]:
    """(weight rows holding real token ids, the vocab-parallel kwargs) for this TP rank."""
    start, end = model.vocab_range
    kw = {"vocab_start": start, "group": model.dims.tp_group,
          "vocab_size": padded_vocab_size(model.config.vocab_size, model.dims.tp)}
    return model.head_weight[: end - start], kw


def token_logprobs(model, hidden_TH, targets_T, *, temperature: float, entropy: bool = False):
    """(logp_T, entropy_T or None), fp32, no grad."""
    if model.dims.tp == 1:
        out = kernels.token_logprobs(hidden_TH, model.head_weight, targets_T, temperature=temperature, return_entropy=entropy)
    else:
        w, kw = _shard(model)
        out = kernels.vocab_parallel_token_logprobs(hidden_TH, w, targets_T, temperature=temperature,
                                                    return_entropy=entropy, **kw)
    return out if entropy else (out, None)


def grpo_loss(model, hidden_TH, targets_T, adv_T, old_T, ref_T, mask_T, **kw):
    """gadx.kernels.grpo_loss (clip, dual clip, k3 KL, token-mean by ``normalizer``) at any TP."""
    if model.dims.tp == 1:
        return kernels.grpo_loss(hidden_TH, model.head_weight, targets_T, adv_T, old_T, ref_T, mask_T, **kw)
    w, vkw = _shard(model)
    return kernels.vocab_parallel_grpo_loss(hidden_TH, w, targets_T, adv_T, old_T, ref_T, mask_T, **vkw, **kw)


def nll_sum(model, hidden_TH, targets_T, mask_T, chunk: int = 1024) -> torch.Tensor:
    """Sum of masked token NLL with grad, never holding more than one chunk's [C, V_local] logits
    (each chunk's logits are recomputed in backward)."""
    weight = model.head_weight
    tp = model.dims.tp
    if tp > 1:
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        start, end = model.vocab_range
        real_V = torch.arange(weight.shape[0], device=weight.device) < end - start
        hidden_TH = model.head_input(hidden_TH)  # identity forward, d(hidden) all-reduced over TP

    def part(h_CH, t_C, m_C):
        logits_CV = (h_CH @ weight.t()).float()
        if tp == 1:
            return (F.cross_entropy(logits_CV, t_C, reduction="none") * m_C).sum()
        logits_CV = logits_CV.masked_fill(~real_V, float("-inf"))
        return (vocab_parallel_cross_entropy(logits_CV[:, None], t_C[:, None])[:, 0] * m_C).sum()

    total = hidden_TH.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden_TH.shape[0], chunk):
        total = total + checkpoint(part, hidden_TH[s : s + chunk], targets_T[s : s + chunk], mask_T[s : s + chunk],
                                   use_reentrant=False)
    return total


def seq_logprob_sums(model, hidden_TH, targets_T, mask_T, doc_T, num_seqs: int, *, temperature: float,
                     chunk: int = 1024) -> torch.Tensor:
    """[num_seqs] per packed sequence (``doc_T``: its local index per token; padding's index is
    num_seqs and is dropped), the sum of its masked tokens' log-probs at ``temperature``, WITH grad
    (the implicit-reward D's Bradley-Terry step). The per-token CE of ``nll_sum`` on logits / T
    (vocab-parallel at TP>1), chunked and recomputed in backward, then summed per sequence."""
    weight = model.head_weight
    tp = model.dims.tp
    inv_t = 1.0 / temperature
    if tp > 1:
        from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

        start, end = model.vocab_range
        real_V = torch.arange(weight.shape[0], device=weight.device) < end - start
        hidden_TH = model.head_input(hidden_TH)  # identity forward, d(hidden) all-reduced over TP

    def part(h_CH, t_C):
        logits_CV = (h_CH @ weight.t()).float() * inv_t
        if tp == 1:
            return -F.cross_entropy(logits_CV, t_C, reduction="none")
        logits_CV = logits_CV.masked_fill(~real_V, float("-inf"))
        return -vocab_parallel_cross_entropy(logits_CV[:, None], t_C[:, None])[:, 0]

    logp_T = torch.cat([checkpoint(part, hidden_TH[s : s + chunk], targets_T[s : s + chunk], use_reentrant=False)
                        for s in range(0, hidden_TH.shape[0], chunk)])
    sums = torch.zeros(num_seqs + 1, dtype=torch.float32, device=logp_T.device)
    return sums.index_add(0, doc_T, logp_T * mask_T)[:num_seqs]


def seq_logprob_sums_nograd(model, hidden_TH, targets_T, mask_T, doc_T, num_seqs: int, *, temperature: float) -> torch.Tensor:
    """The same sums without grad, from the fused token_logprobs (what D scores and the reference use)."""
    logp_T, _ = token_logprobs(model, hidden_TH, targets_T, temperature=temperature)
    sums = torch.zeros(num_seqs + 1, dtype=torch.float32, device=logp_T.device)
    return sums.index_add(0, doc_T, logp_T.float() * mask_T)[:num_seqs]
