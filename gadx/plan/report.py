"""The plan's memory table: per-GPU peak by component for each representative rank, and a verdict."""
from __future__ import annotations

import re

from .dryrun import RankPlan

GiB = 1 << 30

ROWS = [  # (label, component keys summed)
    ("weights: student (bf16/fp32 as configured)", ["weights: student"]),
    ("weights: discriminator (trunk)", ["weights: discriminator"]),
    ("weights: frozen reference", ["weights: reference"]),
    ("grads: student (DDP fp32 buffer)", ["grads: student"]),
    ("grads: discriminator trunk (DDP fp32 buffer)", ["grads: discriminator"]),
    ("optimizer: fp32 main params (G + D trunk, DP-sharded)", ["optimizer: student", "optimizer: discriminator"]),
    ("optimizer: Adam moments (G + D trunk, DP-sharded)", ["optimizer: Adam moments"]),
    # D's own head, apart: the implicit D's whole LM head [V/TP, H] (0 when tied to the embedding on
    # one stage) or the score D's [1, H] (dryrun._head_bytes)
    ("D head: weights", ["weights: discriminator head"]),
    ("D head: grads (DDP fp32 buffer)", ["grads: discriminator head"]),
    ("D head: fp32 main params + Adam moments (DP-sharded)", ["optimizer: discriminator head"]),
    ("sampler: KV cache", ["KV cache"]),
    ("sampler: gathered weight copy", ["gathered sampler copy"]),
]


def parse_bytes(text: str) -> int:
    """'80GB' / '80GiB' / '141 GB' / '80' (GiB) -> bytes. GB is read as GiB (how cards are sold
    and how torch.cuda reports them differ by 7%; the verdict should err on the safe side)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B?)?\s*", text, re.I)
    if not m:
        raise ValueError(f"--gpu-mem must look like 80GB or 141GiB, got {text!r}")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[(m.group(2) or "G")[0].upper()]
    return int(float(m.group(1)) * scale)


def rows(r: RankPlan) -> list[tuple[str, int]]:
    c = r.components
    freed = set(r.rollout_only)  # held in the rollout phase only: not part of a later phase's peak
    out = [(label + (" (rollout only)" if freed & set(keys) else ""), sum(c.get(k, 0) for k in keys))
           for label, keys in ROWS]
    persistent = sum(v for _, v in out)
    if r.peak_phase != "rollout":
        persistent -= sum(c.get(k, 0) for k in freed)
    ph = r.phases.get(r.peak_phase, {"start": 0, "activations": 0, "loss_buffers": 0})
    step_bufs = max(ph["start"] - persistent, 0)
    act, loss = ph["activations"], ph["loss_buffers"]
    other = max(r.peak - persistent - step_bufs - act - loss, 0)
    out += [("step data (micro-batches, rollouts, log-probs)", step_bufs),
            ("activations held at the loss (peak phase)", act),
            ("loss buffers (fused head chunks; peak phase)", loss),
            ("other transients (peak phase: backward, attention, ...)", other)]
    return out


PHASE_NOTES = {  # phases whose cost is not obvious from their name
    "student_logliks": "the implicit D's reference: a no-grad student forward over D's pairs",
    "d_score": "D's forward over its pairs",
    "d_update": "D's Bradley-Terry step (implicit D: [chunk, V] log-prob buffers)",
}


def phase_rows(r: RankPlan, unit: str, U: int) -> list[str]:
    """Each phase of one rank's step: its peak, the memory held at the loss entry above the phase's
    start (activations) and the loss's own peak buffers (the head's chunks)."""
    w = 18
    out = [f"{'rank ' + str(r.rank) + ' by phase, ' + unit:<{w}}{'peak':>9}{'activations':>13}{'loss bufs':>11}"]
    for k, v in r.phases.items():
        note = PHASE_NOTES.get(k, "")
        out.append(f"{k:<{w}}{v['peak'] / U:>9.2f}{v['activations'] / U:>13.2f}{v['loss_buffers'] / U:>11.2f}"
                   + (f"  {note}" if note else ""))
    return out


def table(plans: list[RankPlan], gpu_mem: int, *, title: str = "") -> tuple[str, bool]:
    """(text, fits): the table of every representative rank and one verdict line."""
    heads = [f"rank {p.rank} (pp {p.pp_rank})" for p in plans]
    unit, U = ("GiB", GiB) if max(p.peak for p in plans) >= GiB // 4 else ("MiB", 1 << 20)
    lines = [title] if title else []
    w = 58
    lines.append(f"{'per-GPU memory, ' + unit:<{w}}" + "".join(f"{h:>18}" for h in heads))
    lines.append("-" * (w + 18 * len(plans)))
    table_rows = [rows(p) for p in plans]
    for i, (label, _) in enumerate(table_rows[0]):
        lines.append(f"{label:<{w}}" + "".join(f"{tr[i][1] / U:>18.2f}" for tr in table_rows))
    lines.append("-" * (w + 18 * len(plans)))
    lines.append(f"{'peak (MemTracker, whole step)':<{w}}" + "".join(f"{p.peak / U:>18.2f}" for p in plans))
    lines.append(f"{'peak phase':<{w}}" + "".join(f"{p.peak_phase:>18}" for p in plans))
    lines.append(f"{'card memory':<{w}}" + "".join(f"{gpu_mem / U:>18.2f}" for _ in plans))
    lines.append("")
    lines.append(f"peak by phase, {unit}: " + "; ".join(
        f"rank {p.rank}: " + ", ".join(f"{k} {v['peak'] / U:.2f}" for k, v in p.phases.items()) for p in plans))
    for p in plans:
        lines += [""] + phase_rows(p, unit, U)
    worst = max(plans, key=lambda p: p.peak)
    fits = worst.peak <= gpu_mem
    margin = (gpu_mem - worst.peak) / GiB
    verdict = (f"VERDICT: fits: the largest per-GPU peak is {worst.peak / GiB:.1f} GiB (rank {worst.rank}) "
               f"of {gpu_mem / GiB:.0f} GiB, {margin:.1f} GiB to spare before the allocator's own overhead"
               if fits else
               f"VERDICT: does not fit: the largest per-GPU peak is {worst.peak / GiB:.1f} GiB (rank {worst.rank}, "
               f"in {worst.peak_phase}), {-margin:.1f} GiB over the card's {gpu_mem / GiB:.0f} GiB")
    lines.append(verdict)
    return "\n".join(lines), fits
