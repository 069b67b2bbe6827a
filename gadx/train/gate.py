"""When a discriminator is good enough to drive GAD, and when it has fallen back to chance.

    d = gate_decision(acc=0.71, se=0.02, n_pairs=256, acc_star=0.93)
    d.open, d.lower, d.target, d.reason
    chance_warning(acc=0.52, se=0.03, n_pairs=256, acc_star=0.93)  -> a message or None

Pure functions of measured numbers (no model, no config object), so any stage
plan can call them. Why relative: the best any D can reach on the current
student's samples is acc* (ceiling.py), and it falls toward 0.5 as the student
improves, so a fixed threshold (0.65) ends up closing the gate exactly when GAD
works, and a noisy estimate on 64 pairs (standard error ~0.06) passes it by
luck. The gate opens when the lower confidence bound of D's held-out accuracy
closes ``frac`` of the gap 0.5 -> acc*, on at least ``min_pairs`` pairs.
Without a known acc* (a real teacher) the gap is taken to a fixed target.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    open: bool
    lower: float  # lower confidence bound of D's accuracy
    target: float  # what the bound must reach
    reason: str


def gap_target(acc_star: float | None, frac: float, fixed: float) -> float:
    """0.5 + frac * (acc* - 0.5); ``fixed`` when acc* is unknown."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"gate fraction must be in [0, 1], got {frac}")
    if acc_star is None:
        return fixed
    if not 0.0 <= acc_star <= 1.0:
        raise ValueError(f"acc_star must be in [0, 1], got {acc_star}")
    return 0.5 + frac * (acc_star - 0.5)


def gate_decision(*, acc: float, se: float, n_pairs: int, acc_star: float | None, frac: float = 0.5,
                  z: float = 1.645, min_pairs: int = 256, fixed: float = 0.65) -> GateDecision:
    """Open when n_pairs >= min_pairs and acc - z*se >= gap_target(acc_star, frac, fixed).

    An acc* at chance (<= 0.5: the student already matches the teacher on these pairs) leaves no
    gap for D to close, and nothing for GAD to gain from a D: the gate stays shut then."""
    target = gap_target(acc_star, frac, fixed)
    lower = acc - z * se
    if n_pairs < min_pairs:
        return GateDecision(False, lower, target, f"{n_pairs} held-out pairs < {min_pairs}: too noisy to judge D")
    if acc_star is not None and acc_star <= 0.5:
        return GateDecision(False, lower, target, f"acc*={acc_star:.3f}: no gap between the student and the teacher for D to see")
    ok = lower >= target
    ceiling = f"acc*={acc_star:.3f}, " if acc_star is not None else ""
    reason = (f"D's held-out accuracy {acc:.3f} (lower bound {lower:.3f} at z={z}, {n_pairs} pairs) "
              f"{'reaches' if ok else 'is below'} the target {target:.3f} ({ceiling}closing {frac:.0%} of the gap from 0.5)")
    return GateDecision(ok, lower, target, reason)


def chance_warning(*, acc: float, se: float, n_pairs: int, acc_star: float | None, frac: float = 0.2,
                   z: float = 1.645, fixed: float = 0.55) -> str | None:
    """A message when even the upper confidence bound of D's accuracy closes less than ``frac`` of
    the gap 0.5 -> acc* (D no better than chance, within noise); None otherwise."""
    target = gap_target(acc_star, frac, fixed)
    upper = acc + z * se
    if acc_star is not None and acc_star <= 0.5:
        return None  # nothing left to see: a D at chance is right
    if upper >= target:
        return None
    return (f"D's held-out accuracy {acc:.3f} (upper bound {upper:.3f}, {n_pairs} pairs) is below {target:.3f}"
            + (f", {frac:.0%} of the way from chance to acc*={acc_star:.3f}" if acc_star is not None else "")
            + ": D has fallen back to chance; GAD updates now add noise")
