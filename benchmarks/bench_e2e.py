"""End to end: the embedded default's GAD steps, teacher prefetched vs synchronous, at two teacher latencies.

    pytest benchmarks/bench_e2e.py --benchmark-only -s
    python benchmarks/bench_e2e.py --teacher prefetch --out-dir /tmp/e2e   # one variant, JSON on stdout
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_e2e.py   # seconds: a 1-layer student, 2 prompts x 2 samples

A short ``gad`` plan of the embedded default (synthetic world, tiny from-scratch student):
``WARMUP_STEPS`` warmup steps, the D gate forced open, then ``GAD_STEPS`` GAD steps, the
first a warm-up. The trainer's own metrics.jsonl gives each step's time split (rollout /
teacher wait / scoring / update) and tokens/s.

The teacher is served from its own process (``python -m gadx.serve --synthetic``), as a real
teacher (an API, a vLLM server) is, at two latencies: 0 (it answers in the ~15 ms its CPU work
takes, on the trainer's own cores) and ``LATENCY_MS`` added to every answer without CPU
(``--latency-ms``: an API's time to answer a short reply).

Peer: the same run with the teacher called synchronously at the start of each step (submit
the step's requests, wait for all), the baseline a trainer without a prefetcher has.
``teacher.prefetch_depth`` must be >= 1, so the synchronous variant gives the trainer's
TeacherFeed the ``SyncFetch`` below instead of its Prefetcher. Every variant runs ``PAIRS`` times in its own
process with its own teacher cache, variants alternating (never at once); the seeded data and
replies make step i the same tokens in every run, so step times pair up exactly.
``GADX_BENCH_RESULTS=1`` writes benchmarks/results/e2e.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _models import run_json_scripts  # noqa: E402
from _smoke import SMOKE, pick  # noqa: E402
from results import Results, table  # noqa: E402

WARMUP_STEPS, GAD_STEPS = pick(full=(2, 11), smoke=(2, 2))  # GAD step 1 is a warm-up: 10 timed steps a run
PAIRS = pick(full=3, smoke=1)  # runs of each variant, alternating order
LATENCY_MS = float(os.environ.get("GADX_BENCH_E2E_LATENCY_MS", pick(full=1000, smoke=50)))
# smoke: the tiny trainer-test shape (tests/train/conftest.py), so the variants take seconds
SMOKE_SETS = pick(full={}, smoke={
    "model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 1, "model.num_heads": 2,
    "model.num_kv_heads": 1, "stages.prompts_per_step": 2, "stages.sft_prompts_per_step": 2, "stages.n_samples": 2,
    "stages.max_prompt_len": 48, "stages.max_response_len": 12, "parallel.micro_batch_tokens": 256,
    "data.held_out_size": 4, "run.eval_size": 4, "run.eval_limit": 4})
SPLIT = ("time/step", "time/rollout", "time/teacher_wait", "time/scoring", "time/update", "tokens_per_s")
SHOWN = SPLIT + ("len/student", "len/teacher", "loss/g_pg")  # per-step rows kept in the results JSON
LABEL = {"sync": "synchronous teacher", "prefetch": "prefetched teacher"}


def overrides(out_dir: Path, teacher_url: str | None = None) -> list[str]:
    sets = {**({"teacher.base_url": teacher_url} if teacher_url else {}),
        "run.plan": "gad", "run.out_dir": str(out_dir), "run.eval_every": 10_000, "run.tensorboard": "false",
        "run.progress": "false", "stages.warmup.steps": WARMUP_STEPS, "stages.warmup.d_only_steps": 1,
        "stages.gad.steps": GAD_STEPS, "stages.gad.d_acc_gate": 0.0, **SMOKE_SETS,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


class SyncFetch:
    """Rank 0's answer source with nothing in flight between steps: ``get`` submits the step's
    requests and waits (plugged into the trainer's TeacherFeed in place of its Prefetcher)."""

    def __init__(self, client, asked):
        self.client, self._asked = client, iter(asked)

    def get(self) -> list:
        futures = []
        for req in next(self._asked):
            req = dict(req)
            futures.append(self.client.submit(req.pop("messages"), **req))
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except Exception as e:  # the feed reports a failed request itself
                out.append(e)
        return out

    def close(self) -> None:
        pass


def run_variant(teacher: str, out_dir: Path, teacher_url: str | None = None) -> dict:
    import torch

    from gadx.parallel import destroy_parallel
    from gadx.train.config import load_config
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    cfg, rest = load_config(overrides(out_dir, teacher_url))
    assert not rest, rest
    env = Env(cfg)
    if teacher == "sync":
        from gadx.train.teacher_feed import TeacherFeed

        env.prefetcher = lambda batches: TeacherFeed(batches, remote=env.remote_teacher, client=env.client,
                                                     encode=env.reply_ids, prefetcher=SyncFetch)
    try:
        summary = Run(cfg, env, name="gad", out_dir=out_dir / "gad").train()
        threads_cpu = thread_cpu_s()  # before close: the teacher's threads are still alive
    finally:
        env.close()
        destroy_parallel()
    rows = [json.loads(line) for line in (out_dir / "gad" / "metrics.jsonl").read_text().splitlines()]
    gad = [r for r in rows if r.get("stage") == "gad"]
    assert len(gad) == GAD_STEPS and not summary["gad_skipped"], (len(gad), summary)
    return {"teacher": teacher, "steps": [{k: r.get(k) for k in ("step", *SHOWN)} for r in gad],
            "prefetch_depth": cfg.teacher.prefetch_depth, "threads": torch.get_num_threads(),
            "loadavg_1m": os.getloadavg()[0], "losses_finite": all(isinstance(r.get("loss/g_pg"), float) for r in gad),
            "thread_cpu_s": threads_cpu, "process_cpu_s": time.process_time()}


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by Python thread name (Linux /proc): how much
    of the trainer's CPU the teacher's client took over the whole run."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        out[t.name] = out.get(t.name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def variant_cmd(teacher: str, out_dir: Path, teacher_url: str) -> list[str]:
    return [sys.executable, __file__, "--teacher", teacher, "--out-dir", str(out_dir), "--teacher-url", teacher_url]


teacher_process_cpu_s: dict[float, float] = {}


@contextlib.contextmanager
def teacher_process(latency_ms: float = 0.0):
    """``python -m gadx.serve --synthetic`` (the embedded default's teacher, same world seed) in its
    own process on a free loopback port, answering ``latency_ms`` late; yields its base URL."""
    from gadx.train.config import load_config

    cfg, _ = load_config([])
    proc = subprocess.Popen([sys.executable, "-m", "gadx.serve", "--synthetic", "--seed", str(cfg.data.world_seed),
                             "--host", "127.0.0.1", "--port", "0", "--latency-ms", str(latency_ms)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://\S+)", line)
        assert m, f"gadx serve did not start: {line!r}"
        yield m.group(1)
        try:  # the teacher's CPU time over all the variants it served (utime + stime of its process)
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            teacher_process_cpu_s[latency_ms] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def timed(run: dict, key: str) -> list[float]:
    return [float(r.get(key) or 0.0) for r in run["steps"][1:]]  # the first GAD step is a warm-up


def run_tokens_per_s(run: dict) -> float:
    """Tokens over time across the run's timed steps (a median of per-step tokens/s would pick
    steps of different lengths in different runs)."""
    t = timed(run, "time/step")
    return sum(tps * s for tps, s in zip(timed(run, "tokens_per_s"), t)) / sum(t)


def paired_ratio(base: list[dict], ours: list[dict], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Baseline time over ours (> 1: ours faster) on the same steps of the same runs: the ratio of
    the summed step times, with a 95% bootstrap interval over the (run, step) pairs."""
    pairs = [(b, o) for rb, ro in zip(base, ours) for b, o in zip(timed(rb, "time/step"), timed(ro, "time/step"))]
    rng = random.Random(seed)
    boots = sorted(sum(b for b, _ in d) / sum(o for _, o in d)
                   for d in ([rng.choice(pairs) for _ in pairs] for _ in range(n_boot)))
    return {"ratio": sum(b for b, _ in pairs) / sum(o for _, o in pairs), "n_pairs": len(pairs),
            "ci95": [boots[int(0.025 * n_boot)], boots[int(0.975 * n_boot) - 1]]}


@pytest.mark.timeout(3600)  # ~8 minutes at full size on a quiet 2-core CPU; pyproject's default is 600 s
def test_e2e_prefetch_vs_sync(benchmark, tmp_path):
    res = Results("e2e", rounds=PAIRS * (GAD_STEPS - 1), config="embedded default, plan=gad",
                  warmup_steps=WARMUP_STEPS, gad_steps=GAD_STEPS, runs_per_variant=PAIRS, latency_ms=[0.0, LATENCY_MS],
                  note=f"rounds = timed GAD steps per variant ({PAIRS} runs x {GAD_STEPS - 1}; the first GAD step of "
                       "a run is a warm-up); variants alternate, one at a time, each run in its own process; the "
                       "teacher in its own process")
    settings = {0.0: ("sync", "prefetch"), LATENCY_MS: ("sync", "prefetch")}

    def compare():
        out = {}
        for latency, variants in settings.items():
            with teacher_process(latency) as url:
                for i in range(PAIRS):
                    for v in (variants if i % 2 == 0 else variants[::-1]):
                        d = tmp_path / f"{latency:g}ms-{v}-{i}"
                        out.setdefault((latency, v), []).append(run_json_scripts({v: variant_cmd(v, d, url)})[v])
        return out

    out = benchmark.pedantic(compare, rounds=1, iterations=1)
    runs = [r for rs in out.values() for r in rs]
    for r in runs:
        assert r["losses_finite"], [s.get("loss/g_pg") for s in r["steps"]]
    # the teacher's replies are seeded, so neither prefetching nor latency may change what is trained
    for other in runs[1:]:
        lo, ls = [s["loss/g_pg"] for s in runs[0]["steps"]], [s["loss/g_pg"] for s in other["steps"]]
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(lo, ls)), (lo, ls)
    res.data["threads"] = runs[0]["threads"]
    res.data["prefetch_depth"] = out[(0.0, "prefetch")][0]["prefetch_depth"]
    res.data["paired"], res.data["steps"] = {}, {}
    for latency, variants in settings.items():
        tag = f"teacher latency {latency:g} ms"
        base = f"{tag}, {LABEL['sync']}"
        sync = out[(latency, "sync")]
        res.row(f"{base}: tokens/s", [run_tokens_per_s(r) for r in sync], unit="tok/s",
                cpu_times=[r["process_cpu_s"] for r in sync])
        for v in variants[1:]:
            rs = out[(latency, v)]
            res.row(f"{tag}, {LABEL[v]}: tokens/s", [run_tokens_per_s(r) for r in rs], unit="tok/s",
                    baseline=f"{base}: tokens/s", higher_is_better=True, cpu_times=[r["process_cpu_s"] for r in rs],
                    goal=1.0)
        for key in SPLIT[:-1]:
            label = key.split("/")[1]
            res.row(f"{base}: {label}", [x for r in sync for x in timed(r, key)], unit="s")
            for v in variants[1:]:
                res.row(f"{tag}, {LABEL[v]}: {label}", [x for r in out[(latency, v)] for x in timed(r, key)],
                        unit="s", baseline=f"{base}: {label}")
        for v in variants[1:]:
            res.data["paired"][f"{latency:g}ms {v} vs sync"] = paired_ratio(sync, out[(latency, v)])
        res.data["steps"][f"{latency:g}ms"] = {v: [r["steps"] for r in out[(latency, v)]] for v in variants}
    # where the CPU went: the trainer process and its threads (the client's event loop "gadx-teacher",
    # its cache writer), per run; the teacher process over all the runs it served
    res.data["process_cpu_s"] = {f"{k[0]:g}ms {k[1]}": [r["process_cpu_s"] for r in rs] for k, rs in out.items()}
    res.data["thread_cpu_s"] = {f"{k[0]:g}ms {k[1]}": [r["thread_cpu_s"] for r in rs] for k, rs in out.items()}
    res.data["teacher_process_cpu_s"] = {f"{k:g}ms": v for k, v in teacher_process_cpu_s.items()}
    res.data["variant_load_avg_1m_after"] = {f"{k[0]:g}ms {k[1]}": [r["loadavg_1m"] for r in rs]
                                              for k, rs in out.items()}
    res.write()
    print("\n" + table(res.data))
    for name, p in res.data["paired"].items():
        print(f"paired step time, {name}: {p['ratio']:.3f}x [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] "
              f"over {p['n_pairs']} steps")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=["prefetch", "sync"], required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--teacher-url", help="a running teacher (e.g. python -m gadx.serve --synthetic); "
                                          "default: the embedded one, served in a thread of this process")
    a = ap.parse_args(argv)
    print(json.dumps(run_variant(a.teacher, a.out_dir, a.teacher_url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
