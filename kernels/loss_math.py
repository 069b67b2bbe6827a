"""GRPO per-token loss terms and their derivative w.r.t. the token log-prob.

Semantics follow verl's compute_policy_loss (vanilla + dual clip) and its
"low_var_kl" (k3) estimator, as used by the GAD paper:
    ratio = exp(clamp(logp - old, -20, 20))
    pg1 = -A * ratio;  pg2 = -A * clamp(ratio, 1 - clip_low, 1 + clip_high)
    pg  = max(pg1, pg2), and for A < 0: min(pg, -A * dual_clip)
    d   = clamp(ref - logp, -20, 20)
    kl  = clamp(exp(d) - d - 1, -10, 10)
    per_token = pg + kl_coef * kl
The +-20 clamps on the log-ratios come before exp, as in verl: exp(89) already
overflows fp32, and inf * (A = 0) is NaN, so one stale old log-prob on a token
whose group has equal rewards would poison the whole loss. Where a clamp binds,
the term is constant in logp and passes no gradient (what autograd gives).
The derivative is written out by hand so the kernels can form dL/dlogits in
the same pass that computed the log-probs (no autograd graph over [T, V]).
All vectors are [C] fp32 for one chunk of tokens.
"""
import torch

KL_CLAMP = 10.0
LOG_RATIO_CLAMP = 20.0


def grpo_terms(logp, old, adv, ref, *, clip_low, clip_high, dual_clip, kl_coef):
    """Returns (per_token, dper_token/dlogp, clipped [bool], ratio, kl or None)."""
    log_ratio = logp - old
    ratio_live = (log_ratio > -LOG_RATIO_CLAMP) & (log_ratio < LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    clipped = pg2 > pg1  # the clamped branch wins: no gradient through it
    pg = torch.where(clipped, pg2, pg1)
    # d(-A*ratio)/dlogp = -A*ratio where the log-ratio clamp does not bind
    dpg = torch.where(clipped | ~ratio_live, torch.zeros_like(pg1), pg1)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual = (adv < 0) & (pg > cap)
        pg = torch.where(dual, cap, pg)
        dpg = torch.where(dual, torch.zeros_like(dpg), dpg)
    kl = None
    if ref is not None:
        d_raw = ref - logp
        d = d_raw.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        ed = torch.exp(d)
        k3 = ed - d - 1.0
        kl = k3.clamp(-KL_CLAMP, KL_CLAMP)
        if kl_coef > 0:
            # (k3 >= 19 wherever the d clamp binds, so the KL clamp already zeroes the gradient there)
            inside = (k3 > -KL_CLAMP) & (k3 < KL_CLAMP) & (d_raw > -LOG_RATIO_CLAMP) & (d_raw < LOG_RATIO_CLAMP)
            pg = pg + kl_coef * kl
            dpg = dpg + kl_coef * torch.where(inside, 1.0 - ed, torch.zeros_like(ed))
    return pg, dpg, clipped, ratio, kl


def resolve_normalizer(normalizer, mask_T: torch.Tensor) -> torch.Tensor:
    """0-d fp32 tensor; None means the mask's sum (1 when the mask is empty, so the loss is 0)."""
    if normalizer is None:
        total = mask_T.sum()
        return torch.where(total > 0, total, torch.ones_like(total))
    if isinstance(normalizer, torch.Tensor):
        return normalizer.reshape(()).to(torch.float32)
    return torch.tensor(float(normalizer), dtype=torch.float32, device=mask_T.device)


def masked_mean(x_T: torch.Tensor, mask_T: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens; 0 when nothing is masked in. NaN/inf at masked-out tokens is ignored."""
    total = mask_T.sum()
    num = torch.where(mask_T > 0, x_T * mask_T, torch.zeros_like(x_T)).sum()
    return num / torch.where(total > 0, total, torch.ones_like(total))
