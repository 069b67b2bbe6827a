"""The SmolLM2 verdict of one seed: GAD (and the oracle arm, the healed start) against SeqKD, per prompt.

    python tools/real_compare.py --d-check RUN/d_check/d_check_implicit.json     # exit 1 when D is at chance
    python tools/real_compare.py --results RUN/seed0/eval/results.json --out RUN/seed0/compare \
        [--append recipes/results_smollm2.jsonl --seed 0 --timing RUN/seed0/timing.txt --d-check ...]
    python tools/real_compare.py --summary recipes/results_smollm2.jsonl          # every seed so far

With --results: OUT.md (table), OUT.json and OUT.png (differences with their intervals) from
gadx.real.compare; several --results (the same models decoded at other temperatures) compare every
model at every temperature against the baseline at its best one; --append adds one JSON line for this seed (commit, date, wall time, the D check's
verdict, the comparison) to a results file that later runs extend. With only --d-check: print the
D check's verdict and exit 1 when its held-out accuracy is not clear of chance (tools/real_run.sh then
runs no arm). --summary: GAD - SeqKD per set over the seeds of a results file.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from gadx.real.compare import best_model, compare, d_check_verdict, format_compare, merge_temperatures, plot_compare


def _wall_s(timing: Path) -> int | None:
    """Seconds the run took: real_run.sh stamps "<what> <seconds> s  load: ..." counted from each start
    ("gadx real run in ..."), so a run stopped and restarted adds the last stamp of every start."""
    total, last, seen = 0, None, False
    for line in timing.read_text().splitlines():
        if line.startswith("gadx real run in"):
            total, last = total + (last or 0), None
            continue
        parts = line.split(" s  load:")[0].rsplit(" ", 1)
        if len(parts) == 2 and parts[1].isdigit():
            last, seen = int(parts[1]), True
    return total + (last or 0) if seen else None


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def summary(path: Path) -> str:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not rows:
        raise ValueError(f"{path}: no results yet")
    lines = [f"{path}: {len(rows)} seed(s): " + ", ".join(
        f"seed {r['seed']} at {r['commit']} (baseline {r['compare']['baseline']})" for r in rows), "",
             "| set | model | Δ teacher LL/tok vs the baseline, per seed [95% CI] |", "|---|---|---|"]
    for s in rows[0]["compare"]["diffs"]:
        for m in rows[0]["compare"]["diffs"][s]:
            cells = []
            for r in rows:
                d = r["compare"]["diffs"][s][m]["teacher_ll_per_token"]
                cells.append(f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
            lines.append(f"| {s} | {m} | {'; '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, action="append", default=[],
                   help="gadx.real.evaluate's results.json; repeat for other decoding temperatures: the baseline is then "
                        "taken at its best temperature (models renamed NAME@greedy, NAME@T0.8, ...)")
    p.add_argument("--out", type=Path, help="OUT.md / OUT.json / OUT.png")
    p.add_argument("--baseline", default="SeqKD")
    p.add_argument("--tokenizer", help="an HF folder whose tokenizer splits the answers for distinct-2 (default: words)")
    p.add_argument("--d-check", type=Path, help="tools/real_d_check.py's d_check_<kind>.json")
    p.add_argument("--append", type=Path, help="results file (JSON lines) to add this seed to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing", type=Path, help="real_run.sh's timing.txt (the wall time)")
    p.add_argument("--summary", type=Path, help="print the seeds of a results file and exit")
    a = p.parse_args()
    if a.summary:
        print(summary(a.summary))
        return 0
    verdict = None
    if a.d_check:
        ok, line = d_check_verdict(json.loads(a.d_check.read_text()))
        verdict = {"clear_of_chance": ok, "line": line}
        print(line)
        if not a.results:
            return 0 if ok else 1
    if not a.results or not a.out:
        p.error("--results and --out go together (or --d-check alone, or --summary)")
    loaded = [json.loads(r.read_text()) for r in a.results]
    res = loaded[0] if len(loaded) == 1 else merge_temperatures(loaded)
    split = None
    if a.tokenizer:
        from gadx.tokenizer import load_tokenizer

        tok = load_tokenizer(a.tokenizer)
        split = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    c = compare(res, baseline=best_model(res, a.baseline), **({"split": split} if split else {}))
    c["distinct2_units"] = "tokens" if split else "words"
    table = format_compare(c)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text(table + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(c, indent=1))
    plot_compare(c, a.out.with_suffix(".png"))
    print(table)
    if a.append:
        row = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "commit": _commit(), "seed": a.seed, "results": [str(r) for r in a.results],
               "wall_s": _wall_s(a.timing) if a.timing else None, "d_check": verdict, "compare": c}
        with a.append.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"appended seed {a.seed} to {a.append}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        sys.exit(f"real_compare.py: error: {e}")
