"""Knowledge distillation on the teacher's full next-token distribution: the heal that generalises.

    loss = kd_loss(student_logits_NV, teacher_logits_NV, target_N, ce_weight=0.0)
    lr = cosine_lr(step, steps=200, peak=3e-4, warmup=10, floor=0.1)

Why not SFT: SFT on a sampled reply gives the student one token of signal per position, and on 64
prompts a 120-step SFT heal memorised the replies (CE 0.006) while writing word salad on unseen
prompts (teacher log-likelihood -7.3 nats/token). Forward KL(teacher || student) at every reply
position gives the whole next-token distribution instead, i.e. also what the teacher would have said
at each position, which is what a student needs to generalise off its training prompts.

The heal reads the teacher's weights (its logits): it only makes the student checkpoint both arms start
from, a stand-in for the paper's independently trained instruct student. After it, the arms (SeqKD,
GAD) see only the teacher's text.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_loss(student_logits_NV: torch.Tensor, teacher_logits_NV: torch.Tensor, target_N: torch.Tensor | None = None,
            *, ce_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over N positions of KL(p_T || p_S) (+ ``ce_weight`` x CE of ``target_N`` under the student).

    Returns (loss, {"kl": .., "ce": ..}); ce is the student's cross-entropy on the targets (logged
    even when its weight is 0, when targets are given)."""
    if student_logits_NV.shape != teacher_logits_NV.shape or student_logits_NV.dim() != 2:
        raise ValueError(f"student and teacher logits must both be [N, V], got {tuple(student_logits_NV.shape)} "
                         f"and {tuple(teacher_logits_NV.shape)}")
    if ce_weight < 0:
        raise ValueError(f"ce_weight={ce_weight} must be >= 0")
    logp_S = F.log_softmax(student_logits_NV.float(), -1)
    logp_T = F.log_softmax(teacher_logits_NV.float(), -1)
    kl = (logp_T.exp() * (logp_T - logp_S)).sum(-1).mean()
    stats = {"kl": float(kl.detach())}
    loss = kl
    if target_N is not None:
        ce = F.nll_loss(logp_S, target_N)
        stats["ce"] = float(ce.detach())
        if ce_weight > 0:
            loss = loss + ce_weight * ce
    elif ce_weight > 0:
        raise ValueError("ce_weight > 0 needs target_N")
    return loss, stats


def cosine_lr(step: int, *, steps: int, peak: float, warmup: int = 0, floor: float = 0.1) -> float:
    """Linear warmup over ``warmup`` steps to ``peak``, then cosine down to ``floor`` x peak at the last step
    (``step`` counts from 0)."""
    if steps < 1 or peak <= 0 or not 0 <= floor <= 1 or warmup < 0:
        raise ValueError(f"steps={steps} >= 1, peak={peak} > 0, floor={floor} in [0, 1], warmup={warmup} >= 0 expected")
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(steps - 1 - warmup, 1)
    frac = min(max(step - warmup, 0) / span, 1.0)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
