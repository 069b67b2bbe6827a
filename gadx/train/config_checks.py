"""Range checks for every numeric config key: one-line ValueErrors naming key and value.

A key listed in ``RANGES`` gets (low, high, low_open, high_open); any other numeric key must be
a finite number >= 0 (step counts, sizes, seeds and budgets, where negative values are always
mistakes). Keys whose -1 means "automatic" and keys that must be >= 1 are listed explicitly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

INF = math.inf

# key -> (low, high, low exclusive, high exclusive)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "model.vocab_size": (1, INF, False, False),
    "model.hidden_size": (1, INF, False, False),
    "model.intermediate_size": (1, INF, False, False),
    "model.num_layers": (1, INF, False, False),
    "model.num_heads": (1, INF, False, False),
    "model.num_kv_heads": (1, INF, False, False),
    "data.held_out_size": (1, INF, False, False),
    "teacher.prefetch_depth": (1, INF, False, False),
    "teacher.max_in_flight": (1, INF, False, False),
    "teacher.max_tokens": (1, INF, False, False),
    "teacher.temperature": (0, 2, False, False),  # the OpenAI API's range
    "stages.seqkd.steps": (-1, INF, False, False),  # -1: the warmup + GAD budget
    "stages.seqkd.arm_lr": (-1, INF, False, False),  # -1: where warmup's schedule ends (0 is refused in config.py)
    "stages.warmup.g_only_steps": (-1, INF, False, False),  # -1: automatic
    "stages.warmup.d_every": (1, INF, False, False),
    "stages.warmup.d_lr": (-1, INF, False, False),  # -1: by discriminator.kind
    "stages.gad.d_lr": (-1, INF, False, False),  # -1: by discriminator.kind
    "stages.gad.clip_low": (0, 1, False, True),
    "stages.gad.dual_clip": (1, INF, False, False),
    "stages.gad.d_acc_gate": (0, 1, False, True),
    "stages.gad.policy_epochs": (1, INF, False, False),
    "stages.gad.oracle_floor": (-INF, 0, True, True),  # a per-token log-likelihood floor: negative
    "stages.gad.gate_frac": (0, 1, False, False),
    "stages.gad.gate_z": (0, INF, True, False),
    "stages.gad.gate_min_pairs": (1, INF, False, False),
    "stages.gad.gate_samples": (1, INF, False, False),
    "stages.prompts_per_step": (1, INF, False, False),
    "stages.n_samples": (1, INF, False, False),
    "stages.temperature": (0, INF, True, False),  # log-probs are taken at logits / temperature
    "stages.max_prompt_len": (1, INF, False, False),
    "stages.max_response_len": (1, INF, False, False),
    "stages.sft_lr_min_ratio": (0, 1, False, False),
    "stages.length_drift": (0, INF, True, False),
    "parallel.tp": (1, INF, False, False),
    "parallel.pp": (1, INF, False, False),
    "parallel.micro_batch_tokens": (1, INF, False, False),
    "run.seeds": (1, INF, False, False),
    "run.log_every": (1, INF, False, False),
    "run.eval_size": (1, INF, False, False),
    "run.eval_samples": (1, INF, False, False),
}
DEFAULT = (0, INF, False, False)


def _numeric_leaves(obj: Any, prefix: str = "") -> list[tuple[str, int | float]]:
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += _numeric_leaves(v, f"{prefix}{f.name}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((prefix + f.name, v))
    return out


def _describe(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    if hi == INF:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_ranges(cfg: Any) -> None:
    for key, v in _numeric_leaves(cfg):
        lo, hi, lo_open, hi_open = RANGES.get(key, DEFAULT)
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            raise ValueError(f"{key} must be {_describe(lo, hi, lo_open, hi_open)}, got {v!r}")
