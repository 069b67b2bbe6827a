"""Training curves from gadx metrics.jsonl files, in one PNG (a panel per metric, a line per run).

    plot(sorted(out.glob("**/metrics.jsonl")), out / "curves.png")    # gadx.train does this at the end
    python tools/plot_curves.py runs/embedded/**/metrics.jsonl -o curves.png [--keys loss/d,d_acc/heldout]
"""
from __future__ import annotations

import json
import math
from pathlib import Path

DEFAULT_KEYS = ("loss/g_ce", "loss/d", "d_acc/heldout", "reward/std", "kl", "entropy", "len/student", "len/teacher",
                "eval/world_test_id/task_accuracy", "eval/world_test_id/teacher_logprob_per_token", "time/step")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _number(v) -> bool:
    """A plottable value: gadx writes non-finite metrics as JSON null (older files: "-inf" strings)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plotted_points(files: list[Path], key: str) -> dict[str, list[tuple[int, float]]]:
    """Run folder -> the (step, value) points of ``key`` that get drawn (nulls and strings skipped)."""
    return {str(f.parent): [(r["step"], r[key]) for r in read(f) if _number(r.get(key))] for f in files}


def plot(files: list[Path], out: Path, keys: tuple[str, ...] = DEFAULT_KEYS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {str(f.parent): read(f) for f in files}
    # a panel for every key with at least one finite value (a null or "-inf" here and there keeps the panel)
    keys = tuple(k for k in keys if any(_number(row.get(k)) for rows in runs.values() for row in rows))
    if not keys:
        raise ValueError(f"none of the metric keys appear in {[str(f) for f in files]}")
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    # one colour per run in every panel (a run missing from a panel must not shift the others' colours),
    # and one legend for the figure: the first panel may hold only some of the runs
    colours = {name: f"C{i % 10}" for i, name in enumerate(runs)}
    for ax, key in zip(axes.flat, keys):
        for name, rows in runs.items():
            pts = [(r["step"], r[key]) for r in rows if _number(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1, color=colours[name])
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, lw=1.5) for c in colours.values()]
    fig.legend(handles, list(colours), loc="lower center", ncol=min(len(runs), 3), fontsize=7)
    fig.tight_layout(rect=(0, 0.03 * math.ceil(len(runs) / 3) + 0.02, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
