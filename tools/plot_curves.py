"""Plot training curves from gadx metrics.jsonl files to one PNG (gadx.train.curves).

    python tools/plot_curves.py runs/embedded/**/metrics.jsonl -o curves.png [--keys loss/d,d_acc/heldout]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from gadx.train.curves import DEFAULT_KEYS, plot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=Path("curves.png"))
    ap.add_argument("--keys", default=",".join(DEFAULT_KEYS))
    a = ap.parse_args()
    print(plot(a.files, a.out, tuple(a.keys.split(","))))


if __name__ == "__main__":
    main()
