"""One results file per benchmark: every published number comes from one of these (shared schema).

    res = Results("grpo_step", rounds=10, threads=2)        # load average taken now
    res.row("trl.GRPOTrainer step", trl_times_s, unit="s", cpu_times=trl_cpu_s)
    res.row("gadx step without D", times_s, unit="s", cpu_times=cpu_s, baseline="trl.GRPOTrainer step",
            goal=1.5, goal_on="cpu")                        # ratio + goal met / not met
    res.write()                                             # benchmarks/results/grpo_step.json, if asked

Where it goes (``GADX_BENCH_RESULTS``): unset, "" or "0" writes nothing; "1" writes
``benchmarks/results/<benchmark>.json`` (the committed files ``tools/bench_table.py`` renders);
any other value is a directory to write into. A smoke-size session (GADX_BENCH_SMOKE=1) never
writes into benchmarks/results (its numbers are not results); into a named directory it writes
the same shape marked ``"smoke": true`` (tests/test_benchmarks_smoke.py checks every benchmark's).

The shape (briefs' schema): benchmark, commit (``+dirty`` when tracked files other than
benchmarks/results/ differ from HEAD), machine {cpu, cores, gpu}, versions, load_avg_1m_before /
_after, threads, rounds, rows [{name, baseline, median, min, max, unit, cpu_time_median,
ratio_vs_baseline, goal, goal_met, ...}]. A ratio is always a speed-up of the row over its
baseline row measured in the same run (> 1: the row is better): baseline / row for times and
memory, row / baseline for throughputs (``higher_is_better``). With ``goal_on="cpu"`` the goal is
judged on the CPU-time ratio (``ratio_cpu_vs_baseline``), the steadier figure on a shared machine.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
VERSIONED = ("torch", "transformers", "trl", "openai", "megatron-core", "aiohttp", "triton", "liger-kernel",
             "datasets", "gadx")
REQUIRED_ROW_KEYS = ("name", "baseline", "median", "min", "max", "unit", "cpu_time_median", "ratio_vs_baseline",
                     "goal", "goal_met")
REQUIRED_KEYS = ("benchmark", "commit", "machine", "versions", "load_avg_1m_before", "load_avg_1m_after", "threads",
                 "rounds", "rows")


def smoke() -> bool:
    return os.environ.get("GADX_BENCH_SMOKE") == "1"


def results_dir() -> Path | None:
    """Where this session's results go (module docstring), or None: write nothing."""
    v = os.environ.get("GADX_BENCH_RESULTS", "").strip()
    if v in ("", "0"):
        return None
    if v == "1":
        return None if smoke() else RESULTS_DIR
    return Path(v)


def git_commit(root: Path = ROOT) -> str | None:
    """Short HEAD, with "+dirty" when a tracked file (results files aside) differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], capture_output=True, text=True, timeout=10,
                               cwd=root).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    gpu = None
    if "torch" in sys.modules:  # never import torch just to ask (teacher benchmark)
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu, "platform": platform.platform()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def summary(values: Iterable[float]) -> dict:
    v = [float(x) for x in values]
    if not v:
        raise ValueError("a row needs at least one measured value, got none")
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def speedup(ours: float, base: float, higher_is_better: bool) -> float | None:
    """> 1 when ``ours`` is better than ``base``."""
    if higher_is_better:
        return ours / base if base else None
    return base / ours if ours else None


class Results:
    """Rows of one benchmark session; ``write()`` puts them in ``<dir>/<benchmark>.json``."""

    def __init__(self, benchmark: str, *, rounds: int, threads: int | None = None, **extra):
        if not benchmark or "/" in benchmark:
            raise ValueError(f"benchmark must be a plain file stem, got {benchmark!r}")
        self.data = {
            "benchmark": benchmark, "commit": git_commit(), "smoke": smoke(), "machine": machine(),
            "versions": versions(), "load_avg_1m_before": os.getloadavg()[0], "load_avg_1m_after": None,
            "threads": threads if threads is not None else _torch_threads(), "rounds": int(rounds),
            "started_utc": _now(), "finished_utc": None, "command": " ".join(sys.argv), **extra, "rows": [],
        }

    @property
    def rows(self) -> list[dict]:
        return self.data["rows"]

    def find(self, name: str) -> dict:
        for r in self.rows:
            if r["name"] == name:
                return r
        raise ValueError(f"no row named {name!r} yet (rows: {[r['name'] for r in self.rows]})")

    def row(self, name: str, values: Iterable[float], *, unit: str, baseline: str | None = None,
            cpu_times: Iterable[float] | None = None, higher_is_better: bool = False, goal: float | None = None,
            goal_on: str = "wall", **extra) -> dict:
        """Add a row from its per-round ``values``; ``baseline`` names an earlier row of this run.

        ``goal``: the speed-up over the baseline this row must reach; ``goal_on`` "wall" (the
        ``values``) or "cpu" (``cpu_times``). The row is returned (and kept)."""
        if goal_on not in ("wall", "cpu"):
            raise ValueError(f"goal_on must be 'wall' or 'cpu', got {goal_on!r}")
        if goal is not None and baseline is None:
            raise ValueError(f"row {name!r}: a goal is a ratio, it needs a baseline")
        s = summary(values)
        r = {"name": name, "baseline": baseline, "median": s["median"], "min": s["min"], "max": s["max"],
             "n": s["n"], "unit": unit, "higher_is_better": higher_is_better, "cpu_time_median": None,
             "ratio_vs_baseline": None, "goal": goal, "goal_on": goal_on if goal is not None else None,
             "goal_met": None}
        if cpu_times is not None:
            c = summary(cpu_times)
            r.update(cpu_time_median=c["median"], cpu_time_min=c["min"], cpu_time_max=c["max"])
        if baseline is not None:
            b = self.find(baseline)
            if b["unit"] != unit:
                raise ValueError(f"row {name!r} ({unit}) and its baseline {baseline!r} ({b['unit']}) differ in unit")
            r["ratio_vs_baseline"] = speedup(r["median"], b["median"], higher_is_better)
            if r["cpu_time_median"] is not None and b["cpu_time_median"] is not None:
                r["ratio_cpu_vs_baseline"] = speedup(r["cpu_time_median"], b["cpu_time_median"], False)
            if goal is not None:
                got = r["ratio_vs_baseline"] if goal_on == "wall" else r.get("ratio_cpu_vs_baseline")
                if got is None:
                    raise ValueError(f"row {name!r}: goal_on={goal_on!r} but no such ratio (cpu_times on both rows?)")
                r["goal_met"] = bool(got >= goal)
        for k in extra:
            if k in r:
                raise ValueError(f"row {name!r}: extra key {k!r} would overwrite a schema key")
        r.update(extra)
        self.rows.append(r)
        return r

    def write(self, directory: Path | None = None) -> Path | None:
        """Finish (load average after, time) and write the file where ``results_dir()`` says; the path, or None."""
        self.data["load_avg_1m_after"] = os.getloadavg()[0]
        self.data["finished_utc"] = _now()
        out = directory if directory is not None else results_dir()
        if out is None:
            return None
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.data['benchmark']}.json"
        path.write_text(json.dumps(self.data, indent=1, default=_jsonable) + "\n")
        print(f"results: {path}", file=sys.stderr)
        return path


def table(data: dict) -> str:
    """The markdown table tools/bench_table.py renders for this results dict."""
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_table import table as _table

    return _table(data)


def validate(data: dict) -> None:
    """Raise ValueError when ``data`` is not a results file of this schema (tools/bench_table.py, tests)."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"results file lacks {missing}")
    for k in ("cpu", "cores", "gpu"):
        if k not in data["machine"]:
            raise ValueError(f"results machine lacks {k!r}: {data['machine']}")
    if not data["rows"]:
        raise ValueError(f"results file {data['benchmark']!r} has no rows")
    for r in data["rows"]:
        missing = [k for k in REQUIRED_ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"row {r.get('name')!r} lacks {missing}")
        if not r["min"] <= r["median"] <= r["max"]:
            raise ValueError(f"row {r['name']!r}: median {r['median']} outside [{r['min']}, {r['max']}]")


def _torch_threads() -> int | None:
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
