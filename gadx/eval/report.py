"""Results output: a Table-2-style terminal table, JSON, CSV and a PNG bar chart with intervals.

    from gadx.eval.report import write_reports, format_table
    print(format_table(results))               # rows = models, columns = suites
    paths = write_reports(results, "out/")     # results.json, results.csv, scores.png

``results`` is the dict returned by ``gadx.eval.runner.run_eval``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from gadx.eval.table import table


def _cell(m: dict, judged: bool) -> str:
    if not judged:
        return f"{m['mean_len_tokens']:.0f}"
    if m["score"] is None:
        return "n/a"
    s = f"{m['score']:.1f} [{m['ci_low']:.1f},{m['ci_high']:.1f}]"
    return s + (f" ({m['n_unparseable']}?)" if m["n_unparseable"] else "")


def format_table(results: dict) -> str:
    """Judge scores with 95% intervals (or mean lengths on judge-free runs), then mean lengths."""
    models, suites, res = results["models"], results["suites"], results["results"]
    judged = any(res[m][s]["score"] is not None or res[m][s]["n_unparseable"] for m in models for s in suites)

    def block(title: str, cell) -> list[str]:
        return table([title] + list(suites), [[m] + [cell(res[m][s]) for s in suites] for m in models], style="text")

    lines = []
    if judged:
        lines += block("judge score", lambda m: _cell(m, True))
        lines += ["score = 100*sum(student)/(sum(student)+sum(reference)), [95% bootstrap interval], "
                  "(k?) = k unparseable judgements left out", ""]
    lines += block("mean length (tokens)", lambda m: _cell(m, False))
    return "\n".join(lines)


def write_reports(results: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "png": out / "scores.png"}
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = [{"model": m, "suite": s, **results["results"][m][s]}
            for m in results["models"] for s in results["suites"]]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    plot_scores(results, paths["png"])
    return paths


def plot_scores(results: dict, path: str | Path) -> None:
    """Grouped bars (x = suites, one bar per model): judge score with its interval, or mean length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, suites, res = results["models"], results["suites"], results["results"]
    judged = any(res[m][s]["score"] is not None for m in models for s in suites)
    x = np.arange(len(suites))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(suites) * max(1, len(models)) ** 0.5), 3.6))
    for k, m in enumerate(models):
        cells = [res[m][s] for s in suites]
        if judged:
            h = np.array([c["score"] if c["score"] is not None else np.nan for c in cells])
            lo = np.array([c["ci_low"] if c["ci_low"] is not None else np.nan for c in cells])
            hi = np.array([c["ci_high"] if c["ci_high"] is not None else np.nan for c in cells])
            err = np.nan_to_num(np.stack([h - lo, hi - h]))
            ax.bar(x + (k - (len(models) - 1) / 2) * width, np.nan_to_num(h), width, yerr=err, capsize=3, label=m)
        else:
            h = np.array([c["mean_len_tokens"] for c in cells])
            ax.bar(x + (k - (len(models) - 1) / 2) * width, h, width, label=m)
    if judged:
        ax.axhline(50.0, color="grey", lw=0.8, ls="--")
        ax.set_ylabel("judge score (50 = parity)")
        finite = [v for m in models for s in suites for v in (res[m][s]["ci_low"], res[m][s]["ci_high"])
                  if v is not None]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 5))
    else:
        ax.set_ylabel("mean response length (tokens)")
    ax.set_xticks(x, suites)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
