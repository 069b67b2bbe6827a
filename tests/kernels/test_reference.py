"""The float64 reference encodes verl's GRPO semantics: check it on hand-computed tokens."""
import math

import torch

from gadx.kernels.reference import reference_grpo_loss


def _one_token_loss(logp_minus_old, adv, *, ref_minus_logp=None, kl_coef=0.0, dual_clip=3.0):
    # A 1-token, 2-word vocab whose target log-prob is known: logits (x, 0) -> logp = -log(1 + e^-x).
    x = 2.0
    logp = -math.log1p(math.exp(-x))
    h = torch.tensor([[x]], dtype=torch.float64)
    w = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    old = torch.tensor([logp - logp_minus_old], dtype=torch.float64)
    ref = None if ref_minus_logp is None else torch.tensor([logp + ref_minus_logp], dtype=torch.float64)
    loss, m = reference_grpo_loss(h, w, torch.tensor([0]), torch.tensor([adv], dtype=torch.float64), old, ref, torch.tensor([True]),
                                  kl_coef=kl_coef, dual_clip=dual_clip)
    return loss.item(), m


def test_unclipped_token_is_minus_adv_times_ratio():
    loss, m = _one_token_loss(math.log(1.1), 2.0)
    assert math.isclose(loss, -2.0 * 1.1, rel_tol=1e-12) and m["clip_frac"] == 0


def test_high_clip_for_positive_advantage():
    loss, m = _one_token_loss(math.log(1.5), 1.0)
    assert math.isclose(loss, -1.2, rel_tol=1e-12) and m["clip_frac"] == 1


def test_low_clip_for_negative_advantage():
    loss, m = _one_token_loss(math.log(0.5), -1.0)
    assert math.isclose(loss, 0.8, rel_tol=1e-12) and m["clip_frac"] == 1


def test_dual_clip_caps_negative_advantage():
    loss, _ = _one_token_loss(math.log(5.0), -1.0)
    assert math.isclose(loss, 3.0, rel_tol=1e-12)
    loss, _ = _one_token_loss(math.log(5.0), -1.0, dual_clip=None)
    assert math.isclose(loss, 5.0, rel_tol=1e-12)


def test_k3_kl_term_and_its_clamp():
    d = 0.5
    loss, m = _one_token_loss(0.0, 0.0, ref_minus_logp=d, kl_coef=0.1)
    assert math.isclose(loss, 0.1 * (math.exp(d) - d - 1), rel_tol=1e-12)
    loss, _ = _one_token_loss(0.0, 0.0, ref_minus_logp=5.0, kl_coef=1.0)
    assert loss == 10.0
