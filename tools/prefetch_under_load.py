"""Prefetching on a loaded machine: the teacher client's event loop niced (io_nice=10) or at the trainer's priority.

    python tools/prefetch_under_load.py --out benchmarks/measured/prefetch_under_load.json

The embedded default at the e2e benchmark's smoke shape (benchmarks/bench_e2e.py; small steps,
so scheduling dominates), ``--steps`` GAD steps a run (the first ``SKIP`` untimed: the warm-up, and the start of
megatron's checkpoint-writer helper process, spawned by the save before the GAD stage), the teacher served
from its own process answering ``--latency-ms`` late, and ``--hogs`` busy-looping processes
standing in for the other jobs of a shared machine. Prefetched runs alternate between
``io_nice=10`` (TeacherClient's default) and ``io_nice=0`` (the loop at the trainer's priority,
as before), ``--rounds`` of each; one synchronous run last for scale. Prints and writes each run's
mean step time and split (ms).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = 3
SPLIT = ("time/step", "time/rollout", "time/scoring", "time/update", "time/teacher_wait")


def child(teacher: str, url: str, io_nice: int | None, steps: int, out_dir: Path) -> dict:
    os.environ["GADX_BENCH_SMOKE"] = "1"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_e2e

    bench_e2e.GAD_STEPS = steps
    run = bench_e2e.run_variant(teacher, out_dir, url, io_nice)
    timed = run["steps"][SKIP:]
    return {"teacher": teacher, "io_nice": 10 if io_nice is None else io_nice,
            **{k: 1000 * sum(s[k] for s in timed) / len(timed) for k in SPLIT}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the runs as JSON here")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--hogs", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=13)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--child", nargs=4, metavar=("TEACHER", "URL", "IO_NICE", "OUT_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        teacher, url, nice, out_dir = a.child
        print(json.dumps(child(teacher, url, None if nice == "default" else int(nice), a.steps, Path(out_dir))))
        return 0
    for flag in ("rounds", "steps"):
        if getattr(a, flag) < (SKIP + 1 if flag == "steps" else 1):
            raise SystemExit(f"prefetch_under_load: --{flag} too small: {getattr(a, flag)}")
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="gadx_prefetch_load_"))
    server = subprocess.Popen([sys.executable, "-m", "gadx.serve", "--synthetic", "--host", "127.0.0.1", "--port", "0",
                               "--latency-ms", str(a.latency_ms)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    hogs = []
    try:
        url = re.search(r"at (http://\S+)", server.stdout.readline()).group(1)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hogs)]
        plan = [("prefetch", n) for _ in range(a.rounds) for n in ("default", "0")] + [("sync", "default")]
        runs = []
        for i, (teacher, nice) in enumerate(plan):
            cmd = [sys.executable, __file__, "--steps", str(a.steps), "--child", teacher, url, nice, str(tmp / str(i))]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "load_1m": os.getloadavg()[0]})
            r = runs[-1]
            print(f"{teacher:8s} io_nice={r['io_nice']:2d}: step {r['time/step']:6.1f} ms  rollout {r['time/rollout']:6.1f}"
                  f"  scoring {r['time/scoring']:6.1f}  update {r['time/update']:6.1f}  wait {r['time/teacher_wait']:5.1f}"
                  f"  (load {r['load_1m']:.1f})", flush=True)
    finally:
        for h in hogs:
            h.kill()
        server.terminate()
    if a.out:
        from subprocess import check_output

        commit = check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        a.out.write_text(json.dumps({"command": " ".join(sys.argv), "commit": commit, "hogs": a.hogs,
                                     "latency_ms": a.latency_ms, "steps": a.steps, "cores": os.cpu_count(),
                                     "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
