"""Shared benchmark harness: every figure is a ratio against a named peer measured in the same run.

The published numbers come from each benchmark's results file (``benchmarks/results.py``:
``GADX_BENCH_RESULTS=1`` writes benchmarks/results/<benchmark>.json, rendered by
tools/bench_table.py). The older ``record`` fixture below remains for benchmarks not yet moved
to it: it prints a table, and writes its rows only where ``GADX_BENCH_OUT`` points.

Benchmarks call the ``record`` fixture once per comparison::

    record(group="sampler", name="tokens/s, batch 64 x 128 new", ours=12_345.0,
           peer_name="transformers.generate", peer=4_100.0, higher_is_better=True,
           unit="tok/s", extra={"model": "qwen2-tiny"})

At the end of the session a markdown table is printed and, when ``GADX_BENCH_OUT`` is set, the
rows go to ``$GADX_BENCH_OUT/<UTC time>.json`` and ``.csv`` with the machine, library versions
and git commit (never into benchmarks/results/, whose files are the committed results). Benchmarks never fail on a time
threshold; they fail only when a correctness check inside them fails.

``GADX_BENCH_SMOKE=1`` shrinks every benchmark to seconds (``_smoke.py``); such a session
writes results only where ``GADX_BENCH_OUT`` points, marked ``"smoke": true``.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

import pytest

from _smoke import SMOKE
from results import cpu_name as _cpu_name

_ROWS: list[dict] = []


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": _git_commit(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for mod in ("triton", "transformers", "trl", "openai", "megatron.core", "aiohttp"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[mod] = getattr(m, "__version__", "?")
        except Exception:  # optional peers: absent is fine
            info[mod] = None
    try:  # liger_kernel has no __version__
        from importlib.metadata import version
        info["liger-kernel"] = version("liger-kernel")
    except Exception:
        info["liger-kernel"] = None
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@pytest.fixture
def record(benchmark):
    # Requesting pytest-benchmark's fixture marks every ratio test as a benchmark, so
    # `pytest benchmarks/ --benchmark-only` runs it; the ratio itself is timed by the test.
    def _record(*, group: str, name: str, ours: float, peer_name: str, peer: float, unit: str,
                higher_is_better: bool, extra: dict | None = None) -> float:
        if higher_is_better:
            ratio = ours / peer if peer else float("nan")
        else:
            ratio = peer / ours if ours else float("nan")
        _ROWS.append({"group": group, "name": name, "ours": ours, "peer_name": peer_name, "peer": peer,
                      "unit": unit, "speedup_vs_peer": ratio, "higher_is_better": higher_is_better,
                      **({"extra": extra} if extra else {})})
        return ratio

    return _record


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    info = machine_info()
    if not os.environ.get("GADX_BENCH_OUT"):
        _print_table(info)
        return  # benchmarks/results/ holds the committed results files only (results.py)
    out_dir = Path(os.environ["GADX_BENCH_OUT"])
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = info["time_utc"].replace(":", "").replace("+0000", "Z")
    (out_dir / f"{stamp}.json").write_text(json.dumps({"machine": info, "smoke": SMOKE, "rows": _ROWS}, indent=2))
    with open(out_dir / f"{stamp}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["group", "name", "ours", "peer_name", "peer", "unit", "speedup_vs_peer"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(_ROWS)
    _print_table(info)
    print(f"results: {out_dir / stamp}.json")


def _print_table(info: dict) -> None:
    hw = info["cuda"] or f"{info['cpu']} ({info['torch_threads']} threads)"
    lines = [f"\n### gadx benchmarks{' (SMOKE SIZES: not results)' if SMOKE else ''} on {hw}, torch {info['torch']}, commit {info['commit']}",
             "| group | measure | gadx | peer | peer value | gadx speed-up |", "|---|---|---|---|---|---|"]
    for r in _ROWS:
        lines.append(f"| {r['group']} | {r['name']} | {r['ours']:.4g} {r['unit']} | {r['peer_name']} | "
                     f"{r['peer']:.4g} {r['unit']} | {r['speedup_vs_peer']:.2f}x |")
    print("\n".join(lines))
