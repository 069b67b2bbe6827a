"""The one table formatter of gadx's result tables (gadx eval, gadx.train's results.md, gadx.real).

    lines = table(["model", "score"], [["G", "7.1"], ["SeqKD", "6.4"]])                # markdown
    lines = table(["model", "score"], rows, right=[False, True])                        # "---:" columns
    lines = table(["judge score", "vicuna"], rows, style="text")                        # padded columns

Cells are strings (each caller formats its numbers); the result is a list of lines so callers
can add notes below. ``style="text"`` pads every column to its widest cell, the first left-aligned
and the others right-aligned, with a dashed line under the header (for a terminal).
"""
from __future__ import annotations

from collections.abc import Sequence

STYLES = ("markdown", "text")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, style: str = "markdown",
          right: Sequence[bool] | None = None) -> list[str]:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    bad = [r for r in rows if len(r) != len(header)]
    if bad:
        raise ValueError(f"every row needs {len(header)} cells (the header's), got {bad[0]!r}")
    if style == "markdown":
        right = right or [False] * len(header)
        sep = "|" + "".join("---:|" if r else "---|" for r in right)
        return [_md_row(header), sep] + [_md_row(r) for r in rows]
    grid = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[c]) for r in grid) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))) for r in grid]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
