"""Markdown tables from the committed benchmark results (benchmarks/results/*.json), never typed by hand.

    python tools/bench_table.py                         # every results file's table on stdout
    python tools/bench_table.py grpo_step e2e           # only these benchmarks
    python tools/bench_table.py --update benchmarks/README.md   # rewrite its generated blocks in place
    python tools/bench_table.py --check benchmarks/README.md    # exit 1 if a block is stale

A generated block in a markdown file sits between two marker lines:

    <!-- bench_table: grpo_step -->
    ...generated, replaced by --update...
    <!-- /bench_table -->

Each table says where its numbers come from (commit, machine, threads, rounds, load average
before/after, time) and gives per row the median, min-max, CPU time, the baseline row measured in
the same run, the speed-up over it, the goal and whether it was met.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results import RESULTS_DIR, validate  # noqa: E402

BLOCK = re.compile(r"(<!-- bench_table: ([\w.-]+) -->\n)(.*?)(<!-- /bench_table -->)", re.S)


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x != x:  # NaN
        return "nan"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def load(directory: Path, names: list[str] | None = None) -> list[dict]:
    files = sorted(directory.glob("*.json"))
    if names:
        wanted = {n: directory / f"{n}.json" for n in names}
        lost = [n for n, p in wanted.items() if not p.exists()]
        if lost:
            raise ValueError(f"no results file for {lost} in {directory}")
        files = list(wanted.values())
    out = []
    for f in files:
        data = json.loads(f.read_text())
        try:
            validate(data)
        except ValueError as e:
            raise ValueError(f"{f}: {e}") from None
        out.append(data)
    return out


def header(d: dict) -> str:
    m = d["machine"]
    hw = m["gpu"] or f"{m['cpu']}, {m['cores']} cores"
    v = d["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "trl", "openai", "liger-kernel") if v.get(k))
    when = (d.get("started_utc") or "")[:16].replace("T", " ")
    smoke = " **SMOKE SIZES: not results**" if d.get("smoke") else ""
    return (f"`{d['benchmark']}`{smoke}: commit {d['commit']}, {hw}, {d['threads']} threads, {d['rounds']} rounds, "
            f"1-min load average {fmt(d['load_avg_1m_before'])} before / {fmt(d['load_avg_1m_after'])} after, "
            f"{when} UTC; {libs}")


def table(d: dict) -> str:
    lines = [header(d), "",
             "| measure | median | min-max | unit | CPU time (median) | vs | speed-up | goal | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        ratio = r["ratio_vs_baseline"]
        sp = "-" if ratio is None else f"{ratio:.2f}x"
        if r.get("ratio_cpu_vs_baseline") is not None:
            sp += f" (CPU {r['ratio_cpu_vs_baseline']:.2f}x)"
        goal = "-" if r["goal"] is None else f">= {r['goal']:g}x" + (" CPU" if r.get("goal_on") == "cpu" else "")
        met = {None: "-", True: "met", False: "**not met**"}[r["goal_met"]]
        cpu = "-" if r["cpu_time_median"] is None else fmt(r["cpu_time_median"])
        lines.append(f"| {r['name']} | {fmt(r['median'])} | {fmt(r['min'])}-{fmt(r['max'])} | {r['unit']} | {cpu} | "
                     f"{r['baseline'] or '-'} | {sp} | {goal} | {met} |")
    return "\n".join(lines) + "\n"


def render(directory: Path, names: list[str] | None = None) -> str:
    return "\n".join(table(d) for d in load(directory, names))


def update_text(text: str, directory: Path) -> str:
    """``text`` with every generated block replaced by its benchmark's current table (a block whose
    benchmark has no results file yet says so, with the command that makes one)."""
    def block(m: re.Match) -> str:
        name = m.group(2)
        if (directory / f"{name}.json").exists():
            body = render(directory, [name])
        else:
            body = f"No results file yet: `python tools/bench_all.py {name}` writes benchmarks/results/{name}.json.\n"
        return m.group(1) + "\n" + body + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="benchmarks (results file stems); default: all")
    ap.add_argument("--dir", type=Path, default=RESULTS_DIR, help="results directory (default %(default)s)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--update", type=Path, metavar="MD", help="rewrite the generated blocks of this markdown file")
    g.add_argument("--check", type=Path, metavar="MD", help="exit 1 if a generated block of this file is stale")
    a = ap.parse_args(argv)
    try:
        if a.update or a.check:
            path = a.update or a.check
            text = path.read_text()
            if not BLOCK.search(text):
                raise ValueError(f"{path} has no '<!-- bench_table: NAME -->' block")
            new = update_text(text, a.dir)
            if a.check:
                if new != text:
                    print(f"{path}: generated benchmark tables are stale; run tools/bench_table.py --update {path}",
                          file=sys.stderr)
                    return 1
                return 0
            path.write_text(new)
            return 0
        print(render(a.dir, a.names or None))
        return 0
    except ValueError as e:
        print(f"bench_table: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
