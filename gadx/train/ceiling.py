"""Pairwise accuracy with ties, its noise, and acc*: the best accuracy any discriminator could reach.

    acc = pairwise_acc_ties(d_teacher_P, d_student_PN)          # ties count 1/2
    acc, se = pairwise_acc_se(d_teacher_P, d_student_PN)        # se clustered by prompt
    ceiling = acc_star(logT_teacher_P, logS_teacher_P, logT_student_PN, logS_student_PN, same_PN)

The Bayes-optimal discriminator between teacher replies y_t ~ T and student
samples y_s ~ S scores log T(y|x) - log S(y|x) (any monotone map of it ranks
the same). Its pairwise accuracy on a set of (teacher reply, student sample)
pairs is acc*: where the teacher is known exactly (the embedded world), a
learned D is judged against it, not against a fixed number, since acc* falls
toward 0.5 as the student improves (docs/design/gad-verdict.md).

A student sample the teacher cannot produce has log T = -inf and loses every
pair; a sample identical to the teacher reply is a tie (1/2), whatever float
noise two forward passes give its scores (pass ``same_PN``).

Only diagnostics may call acc_star: it reads the teacher's probabilities.
"""
from __future__ import annotations

import math

import torch


def pairwise_acc_ties(t_P: torch.Tensor, s_PN: torch.Tensor, same_PN: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over (teacher, sample) pairs of 1[t > s] + 1/2 1[t == s]; ``same_PN`` forces ties."""
    return _pair_credit(t_P, s_PN, same_PN).mean()


def pairwise_acc_se(t_P: torch.Tensor, s_PN: torch.Tensor, same_PN: torch.Tensor | None = None) -> tuple[float, float]:
    """(accuracy, standard error). A prompt's N pairs share its teacher reply, so they are not
    independent: the error is that of the mean of per-prompt accuracies (P clusters)."""
    c_PN = _pair_credit(t_P, s_PN, same_PN)
    per_P = c_PN.mean(dim=1).double()
    P = per_P.numel()
    se = float(per_P.std(unbiased=True)) / math.sqrt(P) if P > 1 else float("inf")
    # a cluster error of 0 (every prompt at the same accuracy) would claim certainty from a few
    # pairs: never report less than the binomial error of the pairs themselves
    acc = float(c_PN.mean())
    se = max(se, math.sqrt(max(acc * (1 - acc), 0.25 / c_PN.numel()) / c_PN.numel()))
    return acc, se


def bayes_scores(logT: torch.Tensor, logS: torch.Tensor) -> torch.Tensor:
    """log T - log S, with -inf where the teacher cannot produce the reply."""
    logT, logS = logT.double(), logS.double()
    assert torch.isfinite(logS).all(), "the student gives every sequence a finite log-probability"
    return torch.where(torch.isinf(logT), torch.full_like(logT, -math.inf), logT - logS)


def acc_star(logT_teacher_P, logS_teacher_P, logT_student_PN, logS_student_PN, same_PN=None) -> torch.Tensor:
    """Pairwise accuracy of the Bayes-optimal discriminator on these pairs (ties 1/2)."""
    t_P = bayes_scores(torch.as_tensor(logT_teacher_P), torch.as_tensor(logS_teacher_P))
    s_PN = bayes_scores(torch.as_tensor(logT_student_PN), torch.as_tensor(logS_student_PN))
    assert torch.isfinite(t_P).all(), "a teacher reply has a finite teacher log-probability"
    return pairwise_acc_ties(t_P, s_PN, same_PN)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (ties get their average rank; -inf is the lowest value).
    nan when either side has no spread."""
    x, y = x.double().flatten(), y.double().flatten()
    assert x.numel() == y.numel()
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float((rx.square().sum() * ry.square().sum()).sqrt())
    return float((rx * ry).sum()) / den if den > 0 else math.nan


def _ranks(v: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(v, stable=True)
    sv = v[order]
    r = torch.empty_like(v)
    i, n = 0, v.numel()
    while i < n:
        j = i
        while j + 1 < n and sv[j + 1] == sv[i]:
            j += 1
        r[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return r


def _pair_credit(t_P: torch.Tensor, s_PN: torch.Tensor, same_PN: torch.Tensor | None) -> torch.Tensor:
    t_P, s_PN = torch.as_tensor(t_P).double(), torch.as_tensor(s_PN).double()
    assert s_PN.dim() == 2 and t_P.shape == s_PN.shape[:1], (t_P.shape, s_PN.shape)
    t_PN = t_P[:, None].expand_as(s_PN)
    credit = (t_PN > s_PN).double() + 0.5 * (t_PN == s_PN).double()
    if same_PN is not None:
        credit = torch.where(torch.as_tensor(same_PN, dtype=torch.bool), torch.full_like(credit, 0.5), credit)
    return credit
