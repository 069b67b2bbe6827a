"""The verdict table from saved evaluations: every arm against SeqKD at its best learning rate and temperature.

    python tools/verdict_table.py recipes/verdict_2026-12-03 [--baseline seqkd40,seqkd40_lr1e-4,seqkd40_lr5e-5]
        [--arms sft_start,oracle,gad,frozen] [--temp 0.0] [--out table.md]

FOLDER/seed*/ARM.json are `tools/oracle_arm.py eval`-format files (the same prompts in every file). Per seed and
split the baseline is the (baseline arm, temperature) with the highest mean validity: the best learning rate and
temperature of SeqKD, chosen on the test prompts themselves, which favours the baseline (the arms are read at
--temp, greedy by default, with no choice). Printed: each arm's validity, per seed and the mean, and the paired
per-prompt difference arm minus baseline with a bootstrap 95% interval (gadx.train.verdict.paired_bootstrap),
per seed and pooled (every seed's prompts in one paired sample: it ignores the spread between seeds, so read it
beside the per-seed signs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gadx.train.verdict import TEMPS, paired_bootstrap

SPLITS = ("test_id", "test_ood")


def best_baseline(evals: dict[str, dict], names: list[str], split: str) -> tuple[str, str]:
    """(arm, temperature) of the baseline arms with the highest mean validity on ``split``."""
    cands = [(evals[n]["splits"][split][str(t)]["valid"], n, str(t)) for n in names if n in evals for t in TEMPS]
    if not cands:
        raise ValueError(f"none of the baseline arms {names} was found")
    _, name, t = max(cands, key=lambda c: c[0])  # the first on a tie: the arm order given, then TEMPS' order
    return name, t


def _ci(m: float, lo: float, hi: float) -> str:
    bold = "**" if lo > 0 or hi < 0 else ""  # the interval excludes 0
    return f"{bold}{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{bold}"


def table(folder: Path, baseline: list[str], arms: list[str], temp: str) -> str:
    seeds = sorted(p for p in folder.glob("seed*") if p.is_dir())
    if not seeds:
        raise ValueError(f"no seed* folders in {folder}")
    evals = {s.name: {p.stem: json.loads(p.read_text()) for p in s.glob("*.json")} for s in seeds}
    lines = [f"baseline per seed and split: the best of {', '.join(baseline)} x T in {list(TEMPS)} (chosen on the test prompts)"]
    base = {}
    for s, ev in evals.items():
        for split in SPLITS:
            base[s, split] = best_baseline(ev, baseline, split)
            n, t = base[s, split]
            lines.append(f"  {s} {split}: {n} at T={t}: {ev[n]['splits'][split][t]['valid']:.3f}")
    lines += ["", f"| arm (T={temp}) | ID per seed | ID mean | OOD per seed | OOD mean | minus best SeqKD, ID: per seed; pooled "
              "| minus best SeqKD, OOD: per seed; pooled |", "|---|---|---|---|---|---|---|"]
    for arm in ["SeqKD best"] + arms:
        cells = []
        for split in SPLITS:
            vals = []
            for s, ev in evals.items():
                if arm == "SeqKD best":
                    n, t = base[s, split]
                    vals.append(ev[n]["splits"][split][t]["valid"])
                elif arm in ev:
                    vals.append(ev[arm]["splits"][split][temp]["valid"])
            cells += [" / ".join(f"{v:.3f}" for v in vals) or "-", f"{sum(vals) / len(vals):.3f}" if vals else "-"]
        diffs = []
        for split in SPLITS:
            ds, pa, pb = [], [], []
            for s, ev in evals.items():
                if arm == "SeqKD best" or arm not in ev:
                    continue
                n, t = base[s, split]
                key = "per_prompt_valid"
                a_, b_ = ev[n]["splits"][split][t][key], ev[arm]["splits"][split][temp][key]
                ds.append(_ci(*paired_bootstrap(a_, b_, seed=0)))
                pa += a_
                pb += b_
            if len(ds) > 1:
                ds[-1] += "; pooled " + _ci(*paired_bootstrap(pa, pb, seed=0))
            diffs.append("; ".join(ds) or "-")
        lines.append(f"| {arm} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {diffs[0]} | {diffs[1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--baseline", default="seqkd40,seqkd40_lr1e-4,seqkd40_lr5e-5")
    ap.add_argument("--arms", default="sft_start,oracle,gad,frozen")
    ap.add_argument("--temp", default="0.0", help="the temperature the arms are read at")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    if a.temp not in {str(t) for t in TEMPS}:
        raise ValueError(f"--temp must be one of {[str(t) for t in TEMPS]}, got {a.temp!r}")
    text = table(Path(a.folder), a.baseline.split(","), [x for x in a.arms.split(",") if x], a.temp)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
