"""Regenerate every committed benchmark result at HEAD, one benchmark at a time, then the tables.

    python tools/bench_all.py                      # all of benchmarks/bench_*.py -> benchmarks/results/*.json
    python tools/bench_all.py grpo_step e2e        # only these (file stems without "bench_")
    python tools/bench_all.py --smoke              # every benchmark at smoke size into a temp dir (seconds-minutes)

Each benchmark file runs in its own ``pytest`` process with ``GADX_BENCH_RESULTS=1`` (so it
writes benchmarks/results/<name>.json, benchmarks/results.py), serially: nothing else of the
suite runs beside it. Threads: ``--threads`` (default: every core), exported as
OMP_NUM_THREADS. Afterwards the generated blocks of benchmarks/README.md are rewritten from
the files (tools/bench_table.py --update, README.md too), and the wall time of each benchmark and of the whole
run is printed and appended to benchmarks/results/bench_all.log.

Run it on a quiet machine at a clean HEAD: each results file records the commit (``+dirty``
when tracked files differ from HEAD) and the 1-minute load average before and after, and
says nothing more about the load than that.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def benchmarks(names: list[str]) -> list[Path]:
    files = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not names:
        return files
    by = {p.stem.removeprefix("bench_"): p for p in files}
    unknown = [n for n in names if n not in by]
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; known: {sorted(by)}")
    return [by[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS (default %(default)s)")
    ap.add_argument("--smoke", action="store_true", help="smoke sizes, results into a temp dir (checks the pipeline)")
    ap.add_argument("--no-tables", action="store_true", help="do not rewrite benchmarks/README.md's tables")
    a = ap.parse_args(argv)
    try:
        files = benchmarks(a.names)
    except ValueError as e:
        print(f"bench_all: {e}", file=sys.stderr)
        return 2
    if a.threads < 1:
        print(f"bench_all: --threads must be >= 1, got {a.threads}", file=sys.stderr)
        return 2
    out = Path(tempfile.mkdtemp(prefix="gadx_bench_smoke_")) if a.smoke else ROOT / "benchmarks" / "results"
    env = {**os.environ, "GADX_BENCH_RESULTS": str(out) if a.smoke else "1", "OMP_NUM_THREADS": str(a.threads),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("GADX_BENCH_SMOKE", None)
    env.pop("TRITON_INTERPRET", None)
    if a.smoke:
        env["GADX_BENCH_SMOKE"] = "1"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":(exclude)benchmarks/results"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    if dirty and not a.smoke:
        print("bench_all: warning: tracked files differ from HEAD; the results will say +dirty", file=sys.stderr)
    log, failed, t_all = [], [], time.perf_counter()
    for f in files:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", str(f.relative_to(ROOT)), "-q", "-s", "-p", "no:cacheprovider",
               "--benchmark-disable", "-o", "timeout=7200"]
        print(f"== {f.name}: {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        dt = time.perf_counter() - t0
        log.append(f"{f.stem}: {dt:.0f} s wall, exit {rc}, load {os.getloadavg()[0]:.1f}")
        print(f"== {log[-1]}", flush=True)
        if rc != 0:
            failed.append(f.stem)
    total = time.perf_counter() - t_all
    log.append(f"all: {total:.0f} s wall ({len(files)} benchmarks, {a.threads} threads)")
    if not a.smoke:
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        with open(out / "bench_all.log", "a") as f:  # one block per run: partial reruns keep the earlier lines
            f.write(f"## {stamp} finished: bench_all.py {' '.join(argv if argv is not None else sys.argv[1:])}\n"
                    + "\n".join(log) + "\n")
        if not a.no_tables and not failed:
            for md in (ROOT / "benchmarks" / "README.md", ROOT / "README.md"):
                subprocess.run([sys.executable, str(ROOT / "tools" / "bench_table.py"), "--update", str(md)], check=True)
    print("\n".join(log))
    print(f"results in {out}")
    if failed:
        print(f"bench_all: failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
