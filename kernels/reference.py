"""Float64 references for the kernels (tests only: materialises [T, V]).

Written independently of loss_math.py: plain torch ops and autograd, so the
hand-written derivatives of the kernels are checked against autograd.
"""
import torch


def reference_token_logprobs(hidden_TH, weight_VH, targets_T, *, temperature=1.0, return_entropy=False):
    z_TV = (hidden_TH.double() @ weight_VH.double().T) / temperature
    logsm_TV = torch.log_softmax(z_TV, dim=-1)
    logp_T = logsm_TV.gather(1, targets_T.long()[:, None])[:, 0]
    if not return_entropy:
        return logp_T
    return logp_T, -(logsm_TV.exp() * logsm_TV).sum(-1)


def reference_grpo_loss(hidden_TH, weight_VH, targets_T, advantages_T, old_logprobs_T, ref_logprobs_T, mask_T,
                        *, clip_low=0.2, clip_high=0.2, dual_clip=3.0, kl_coef=0.001, temperature=1.0,
                        normalizer=None, compute_entropy=False):
    """Returns (loss, metrics) in float64; differentiable w.r.t. hidden_TH and weight_VH
    (pass float64 leaves with requires_grad to read reference gradients)."""
    logp_T, ent_T = reference_token_logprobs(hidden_TH, weight_VH, targets_T, temperature=temperature,
                                             return_entropy=True)
    m = mask_T.double()
    # masked-out tokens may hold inf/nan; zero them first so autograd's where() cannot leak nan
    clean = lambda x: torch.where(m > 0, x.double(), 0.0)  # noqa: E731
    # old None: on-policy, the ratio is taken against this pass's own (detached) log-probs
    adv, old = clean(advantages_T), clean(logp_T.detach() if old_logprobs_T is None else old_logprobs_T)
    ref_logprobs_T = None if ref_logprobs_T is None else clean(ref_logprobs_T)
    # verl clamps log-ratios to +-20 before exp (fp32 exp overflows past ~88; inf * 0 = nan)
    ratio = torch.exp(torch.clamp(logp_T - old, -20, 20))
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg = torch.maximum(pg1, pg2)
    if dual_clip is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * dual_clip), pg)
    kl = torch.zeros_like(pg)
    if ref_logprobs_T is not None:
        d = torch.clamp(ref_logprobs_T.double() - logp_T, -20, 20)
        kl = torch.clamp(torch.exp(d) - d - 1, -10, 10)
    per_token = pg + kl_coef * kl if ref_logprobs_T is not None else pg
    per_token = torch.where(m > 0, per_token * m, torch.zeros_like(per_token))
    count = m.sum()
    if normalizer is None:
        norm = count if count > 0 else torch.ones_like(count)
    else:
        norm = torch.as_tensor(normalizer, dtype=torch.float64).reshape(())
    loss = per_token.sum() / norm

    def mmean(x):
        x = x.detach()
        return (torch.where(m > 0, x * m, torch.zeros_like(x)).sum() / count) if count > 0 else count * 0
    metrics = {"clip_frac": mmean((pg2 > pg1).double()), "kl": mmean(kl), "ratio": mmean(ratio)}
    if compute_entropy:
        metrics["entropy"] = mmean(ent_T)
    return loss, metrics
