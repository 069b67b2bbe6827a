"""Reply-level text metrics of the heal's check: distinct-n (repetition inflates log-likelihood).

    distinct_n([[5, 6, 5, 6, 5]], 2)  # 2 distinct bigrams of 4 -> 0.5
"""
from __future__ import annotations

from collections.abc import Sequence


def distinct_n(replies: Sequence[Sequence[int]], n: int = 2) -> float:
    """Mean over replies with at least n tokens of (#distinct n-grams / #n-grams); nan when none has."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    vals = []
    for r in replies:
        grams = [tuple(r[i:i + n]) for i in range(len(r) - n + 1)]
        if grams:
            vals.append(len(set(grams)) / len(grams))
    return sum(vals) / len(vals) if vals else float("nan")
