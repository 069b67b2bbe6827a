"""Token selection from next-token logits: greedy, temperature, top-k, top-p.

Sampling is by inverse CDF: one uniform number per row and a ``searchsorted``
on the cumulative probabilities. ``torch.multinomial`` (and the Gumbel/
exponential-race trick it uses) draws one random number per vocabulary entry,
which on CPU costs more than the rest of the sampling step together.
Reproducible from a ``torch.Generator``.
"""
from __future__ import annotations

import torch


def filter_top_k_top_p(logp_BV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the top-k, then outside the smallest nucleus of mass >= top_p."""
    if 0 < top_k < logp_BV.shape[-1]:
        kth_B1 = torch.topk(logp_BV, top_k, dim=-1).values[:, -1:]
        logp_BV = logp_BV.masked_fill(logp_BV < kth_B1, float("-inf"))
    if top_p < 1.0:
        sorted_BV, order_BV = torch.sort(logp_BV, dim=-1, descending=True)
        probs_BV = sorted_BV.softmax(-1)  # renormalised after top-k, as transformers does
        mass_before_BV = probs_BV.cumsum(-1) - probs_BV
        drop_sorted_BV = mass_before_BV >= top_p  # the most likely token always stays
        drop_BV = torch.empty_like(drop_sorted_BV).scatter_(-1, order_BV, drop_sorted_BV)
        logp_BV = logp_BV.masked_fill(drop_BV, float("-inf"))
    return logp_BV


def row_uniforms(B: int, k: int, *, generator: torch.Generator | None, device: torch.device,
                 rows: tuple[int, int] | None = None) -> torch.Tensor:
    """``[B, k]`` uniforms for rows ``[first, first + B)`` of a call of ``total`` rows (``rows=(first, total)``).

    Draws the whole call's ``[total, k]`` and keeps this chunk's rows, so a call split into chunks
    (each with a fresh generator of the same seed) gives every row the numbers the unsplit call
    gives it: per-row randomness depends on the seed, the row's index in the call and the step,
    not on the chunking. ``rows=None`` is one unsplit call (exactly ``torch.rand(B, k)``)."""
    first, total = rows if rows is not None else (0, B)
    assert 0 <= first and first + B <= total, (rows, B)
    u = torch.rand(total, k, generator=generator, device=device)
    return u if total == B else u[first : first + B]


def sample(logits_BV: torch.Tensor, *, temperature: float, top_k: int, top_p: float,
           generator: torch.Generator | None, rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return ``(tokens_B, logp_B)``.

    ``rows=(first, total)``: these rows are ``[first, first + B)`` of a larger call (see ``row_uniforms``).

    ``logp_B`` is ``log_softmax(logits / temperature)`` at the chosen token (float32), the
    policy's log-prob without top-k/top-p truncation. ``temperature == 0`` means greedy,
    with log-probs of the untempered distribution.
    """
    u_B1 = None
    if temperature != 0:
        u_B1 = row_uniforms(logits_BV.shape[0], 1, generator=generator, device=logits_BV.device, rows=rows)
    return sample_with_uniforms(logits_BV, u_B1, temperature=temperature, top_k=top_k, top_p=top_p)


def sample_with_uniforms(logits_BV: torch.Tensor, u_B1: torch.Tensor | None, *, temperature: float, top_k: int,
                         top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample`` given its uniforms ``u_B1`` (None when greedy): no generator inside, so a compiled
    decode step (gadx.sampler.compiled) can trace it while the draws stay eager and unchanged."""
    logits_BV = logits_BV.float()
    if temperature == 0:
        logp_BV = logits_BV.log_softmax(-1)
        tok_B = logits_BV.argmax(-1)
    else:
        logp_BV = (logits_BV / temperature if temperature != 1.0 else logits_BV).log_softmax(-1)
        keep_BV = filter_top_k_top_p(logp_BV, top_k, top_p)
        cdf_BV = keep_BV.exp().cumsum(-1)
        total_B1 = cdf_BV[:, -1:]
        u_B1 = u_B1 * total_B1
        # Keep u strictly below the total: then the first cdf entry above u is a token with p > 0
        # (cdf is flat across removed tokens), so filtered tokens are never drawn.
        u_B1 = torch.minimum(u_B1, torch.nextafter(total_B1, torch.zeros_like(total_B1)))
        tok_B = torch.searchsorted(cdf_BV, u_B1, right=True).squeeze(-1)
    return tok_B, logp_BV.gather(-1, tok_B[:, None]).squeeze(-1)
