"""Discriminator and advantage math for GAD (pure torch, device-side, no host syncs).

    loss_D = bt_loss(d_teacher_P, d_student_PN)            # -logsigmoid(D(y_t) - D(y_s^i)), mean
    acc    = pairwise_acc(d_teacher_P, d_student_PN)       # mean[D(y_t) > D(y_s^i)]
    adv_PN = group_advantages(reward_PN)                   # (r - mean) / (std_unbiased + 1e-6)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_loss(d_teacher_P: torch.Tensor, d_student_PN: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss, teacher wins: each of a prompt's N samples is paired with its one teacher reply."""
    assert d_student_PN.dim() == 2 and d_teacher_P.shape == d_student_PN.shape[:1]
    return -F.logsigmoid(d_teacher_P.float()[:, None] - d_student_PN.float()).mean()


def pairwise_acc(d_teacher_P: torch.Tensor, d_student_PN: torch.Tensor) -> torch.Tensor:
    """Fraction of (teacher, sample) pairs that D orders correctly; 0.5 is chance."""
    return (d_teacher_P[:, None] > d_student_PN).float().mean()


def group_advantages(reward_PN: torch.Tensor, eps: float = 1e-6, norm: str = "group") -> torch.Tensor:
    """GRPO advantages: each prompt's N rewards minus their mean, divided by the group's unbiased std
    (norm="group", the paper's), by the std of all the rank's centred rewards ("batch": a group whose
    rewards barely differ gets a small advantage instead of a full-size one), or not at all ("none")."""
    assert reward_PN.dim() == 2 and reward_PN.shape[1] >= 2, "need N >= 2 samples per prompt"
    r = reward_PN.float()
    c = r - r.mean(dim=1, keepdim=True)
    if norm == "group":
        return c / (r.std(dim=1, unbiased=True, keepdim=True) + eps)
    if norm == "batch":
        return c / (c.square().sum() / max(c.numel() - c.shape[0], 1)).sqrt().clamp(min=eps)
    assert norm == "none", norm
    return c
