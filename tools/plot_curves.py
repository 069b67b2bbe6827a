"""Plot training curves from gadx metrics.jsonl files to one PNG.

    python tools/plot_curves.py runs/embedded/**/metrics.jsonl -o curves.png [--keys loss/d,d_acc/heldout]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

DEFAULT_KEYS = ("loss/g_ce", "loss/d", "d_acc/heldout", "reward/std", "kl", "entropy", "len/student", "len/teacher",
                "eval/world_test_id/task_accuracy", "eval/world_test_id/teacher_logprob_per_token", "time/step")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(files: list[Path], out: Path, keys: tuple[str, ...] = DEFAULT_KEYS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {str(f.parent): read(f) for f in files}
    keys = tuple(k for k in keys if any(k in row for rows in runs.values() for row in rows))
    if not keys:
        raise ValueError(f"none of the metric keys appear in {[str(f) for f in files]}")
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, rows in runs.items():
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1)
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("curves.png"))
    ap.add_argument("--keys", default=",".join(DEFAULT_KEYS))
    a = ap.parse_args()
    print(plot(a.files, a.out, tuple(a.keys.split(","))))


if __name__ == "__main__":
    main()
