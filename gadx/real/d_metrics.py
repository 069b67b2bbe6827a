"""The D check's metrics: held-out pairwise accuracy (ties 1/2) with a prompt-clustered standard error,
and Spearman's rank correlation.

    acc, se = pairwise_accuracy(t_N, s_N, prompt_N)            # pair i: teacher reply vs student sample
    rho = spearman(d_score_M, teacher_ll_per_token_M)

Pairs of one prompt share its teacher reply (and the prompt), so they are not independent: the
standard error treats each prompt as one cluster (the cluster-robust variance of a mean), which
with one pair per prompt is the usual binomial-style error of the mean.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def pair_credit(t: float, s: float, same: bool = False) -> float:
    """1 when D scores the teacher reply higher, 0 when lower, 1/2 for a tie or identical replies."""
    if same or t == s:
        return 0.5
    return 1.0 if t > s else 0.0


def pairwise_accuracy(t_N: Sequence[float], s_N: Sequence[float], cluster_N: Sequence,
                      same_N: Sequence[bool] | None = None) -> tuple[float, float]:
    """(accuracy, prompt-clustered standard error) over N (teacher, sample) pairs.

    se^2 = G/(G-1) * sum_g (sum_{i in g} (c_i - acc))^2 / N^2 over the G clusters; 0 when G < 2.
    """
    N = len(t_N)
    if N == 0 or len(s_N) != N or len(cluster_N) != N or (same_N is not None and len(same_N) != N):
        raise ValueError(f"pairwise_accuracy needs equally long, non-empty inputs, got {N}, {len(s_N)}, "
                         f"{len(cluster_N)}, {None if same_N is None else len(same_N)}")
    credit = [pair_credit(float(t), float(s), bool(same_N[i]) if same_N is not None else False)
              for i, (t, s) in enumerate(zip(t_N, s_N))]
    acc = sum(credit) / N
    resid: dict = {}
    for c, g in zip(credit, cluster_N):
        resid[g] = resid.get(g, 0.0) + (c - acc)
    G = len(resid)
    if G < 2:
        return acc, 0.0
    var = G / (G - 1) * sum(e * e for e in resid.values()) / (N * N)
    return acc, math.sqrt(var)


def _ranks(x: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (Pearson correlation of the tie-averaged ranks); nan when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two equally long sequences of >= 2 values, got {len(x)} and {len(y)}")
    rx, ry = _ranks([float(v) for v in x]), _ranks([float(v) for v in y])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)
