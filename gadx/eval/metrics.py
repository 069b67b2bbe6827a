"""Aggregation of judge scores into the paper's Table 2 number, with bootstrap intervals.

    from gadx.eval.metrics import aggregate
    res = aggregate(judgements, lengths_tokens, n_boot=1000, seed=0)
    res.score, res.ci_low, res.ci_high      # 100 * sum(s) / (sum(s) + sum(r))

The headline score is the ratio of sums over the prompts the judge scored
(``AGGREGATION``); 50 means parity with the judge's own reference answer.
The per-sample mean of 100 * s / (s + r) is reported beside it. Unparseable
judgements are excluded from both and counted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from gadx.eval.judge import Judgement

AGGREGATION = ("score = 100 * sum(student) / (sum(student) + sum(reference)) over judged prompts "
               "(ratio of sums; 50 = parity with the judge's reference answer); "
               "per_sample_mean = mean over prompts of 100 * s / (s + r); "
               "intervals: percentile bootstrap over prompts")


@dataclass
class SuiteScore:
    n_prompts: int
    n_judged: int
    n_unparseable: int
    score: float | None
    ci_low: float | None
    ci_high: float | None
    per_sample_mean: float | None
    per_sample_ci_low: float | None
    per_sample_ci_high: float | None
    student_mean: float | None
    reference_mean: float | None
    mean_len_tokens: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def ratio_of_sums(s_N: np.ndarray, r_N: np.ndarray) -> float:
    return float(100.0 * s_N.sum() / (s_N.sum() + r_N.sum()))


def per_sample_mean(s_N: np.ndarray, r_N: np.ndarray) -> float:
    return float(np.mean(100.0 * s_N / (s_N + r_N)))


def bootstrap_ci(s_N: np.ndarray, r_N: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of (ratio of sums, per-sample mean), resampling prompts with replacement."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = len(s_N)
    assert n == len(r_N) and n > 0
    idx_BN = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    s_BN, r_BN = s_N[idx_BN], r_N[idx_BN]
    ratio_B = 100.0 * s_BN.sum(1) / (s_BN.sum(1) + r_BN.sum(1))
    mean_B = (100.0 * s_BN / (s_BN + r_BN)).mean(1)
    q = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
    lo_r, hi_r = np.percentile(ratio_B, q)
    lo_m, hi_m = np.percentile(mean_B, q)
    return (float(lo_r), float(hi_r)), (float(lo_m), float(hi_m))


def aggregate(judgements: Sequence[Judgement] | None, lengths: Sequence[int], *, n_boot: int = 1000,
              seed: int = 0, confidence: float = 0.95) -> SuiteScore:
    """Suite summary. ``judgements`` None (judge-free run) leaves the score fields None."""
    mean_len = float(np.mean(lengths)) if len(lengths) else None
    n = len(lengths)
    if judgements is None:
        return SuiteScore(n, 0, 0, *([None] * 8), mean_len)
    if len(judgements) != n:
        raise ValueError(f"{len(judgements)} judgements for {n} answers")
    ok = [j for j in judgements if j.parsed]
    if not ok:
        return SuiteScore(n, 0, n, *([None] * 8), mean_len)
    s_N = np.array([j.student_score for j in ok], dtype=np.float64)
    r_N = np.array([j.reference_score for j in ok], dtype=np.float64)
    (lo, hi), (mlo, mhi) = bootstrap_ci(s_N, r_N, n_boot=n_boot, seed=seed, confidence=confidence)
    return SuiteScore(
        n_prompts=n, n_judged=len(ok), n_unparseable=n - len(ok),
        score=ratio_of_sums(s_N, r_N), ci_low=lo, ci_high=hi,
        per_sample_mean=per_sample_mean(s_N, r_N), per_sample_ci_low=mlo, per_sample_ci_high=mhi,
        student_mean=float(s_N.mean()), reference_mean=float(r_N.mean()), mean_len_tokens=mean_len,
    )
