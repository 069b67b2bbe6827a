"""End to end: the embedded default's GAD steps, tokens/s and time split, teacher prefetched vs synchronous.

    pytest benchmarks/bench_e2e.py --benchmark-only -s
    python benchmarks/bench_e2e.py --teacher prefetch --out-dir /tmp/e2e   # one variant, JSON on stdout
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_e2e.py   # seconds: a 1-layer student, 2 prompts x 2 samples

A short ``gad`` plan of the embedded default (synthetic world, tiny from-scratch student):
``WARMUP_STEPS`` warmup steps, the D gate forced open, then ``GAD_STEPS`` GAD steps. The
trainer's own metrics.jsonl gives each step's time split (rollout / teacher wait / scoring /
update) and tokens/s; the first GAD step is a warm-up, the others are the rounds (median,
min-max).

The teacher is served from its own process (``python -m gadx.serve --synthetic``, the same
synthetic teacher the embedded default serves in a thread), so its CPU work and its
interpreter lock are not the trainer's: the setting of a real run, whose teacher is an API or
a vLLM server elsewhere. At full size the test also runs both variants with the teacher served
in a thread of the trainer (``teacher.base_url=embedded``; ``GADX_BENCH_E2E_THREAD=0`` leaves
them out): the setting in which prefetching was slower than the synchronous run.

Peer: the same run with the teacher called synchronously at the start of each step (submit
the step's requests, wait for all), the baseline a trainer without a prefetcher has.
``teacher.prefetch_depth`` must be >= 1, so the synchronous variant gives the trainer's
TeacherFeed the ``SyncFetch`` below instead of its Prefetcher. Each variant runs in its own
process with its own teacher cache, so both pay for every reply; the variants run one
after the other (never at once). ``GADX_BENCH_RESULTS=1`` writes benchmarks/results/e2e.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
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

WARMUP_STEPS, GAD_STEPS = pick(full=(2, 6), smoke=(2, 2))
# smoke: the tiny trainer-test shape (tests/train/conftest.py), so the two variants take seconds
SMOKE_SETS = pick(full={}, smoke={
    "model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 1, "model.num_heads": 2,
    "model.num_kv_heads": 1, "stages.prompts_per_step": 2, "stages.sft_prompts_per_step": 2, "stages.n_samples": 2,
    "stages.max_prompt_len": 48, "stages.max_response_len": 12, "parallel.micro_batch_tokens": 256,
    "data.held_out_size": 4, "run.eval_size": 4, "run.eval_limit": 4})
SPLIT = ("time/step", "time/rollout", "time/teacher_wait", "time/scoring", "time/update", "tokens_per_s")
SHOWN = SPLIT + ("len/student", "len/teacher", "loss/g_pg")  # per-step rows kept in the results JSON


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
    timed = gad[1:]
    med = {k: statistics.median(float(r.get(k, 0.0)) for r in timed) for k in SPLIT}
    return {"teacher": teacher, "teacher_at": "thread" if teacher_url is None else "process", "median": med, "steps": [{k: r.get(k) for k in ("step", *SHOWN)} for r in gad], "prefetch_depth": cfg.teacher.prefetch_depth,
            "threads": torch.get_num_threads(), "loadavg_1m": os.getloadavg()[0],
            "losses_finite": all(isinstance(r.get("loss/g_pg"), float) for r in gad),
            "thread_cpu_s": threads_cpu, "process_cpu_s": time.process_time()}


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by Python thread name (Linux /proc): how much
    of the trainer's CPU the teacher's client (and an in-thread server) took over the whole run."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        out[t.name] = out.get(t.name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def variant_cmd(teacher: str, out_dir: Path, teacher_url: str | None = None) -> list[str]:
    return [sys.executable, __file__, "--teacher", teacher, "--out-dir", str(out_dir),
            *(["--teacher-url", teacher_url] if teacher_url else [])]


teacher_process_cpu_s: list[float] = []


@contextlib.contextmanager
def teacher_process():
    """``python -m gadx.serve --synthetic`` (the embedded default's teacher, same world seed) in its
    own process on a free loopback port; yields its base URL."""
    from gadx.train.config import load_config

    cfg, _ = load_config([])
    proc = subprocess.Popen([sys.executable, "-m", "gadx.serve", "--synthetic", "--seed", str(cfg.data.world_seed),
                             "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"at (http://\S+)", line)
        assert m, f"gadx serve did not start: {line!r}"
        yield m.group(1)
        try:  # the teacher's CPU time over both variants (utime + stime of its process)
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            teacher_process_cpu_s.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except OSError:
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _steps(v: dict, key: str) -> list[float]:
    return [float(r.get(key) or 0.0) for r in v["steps"][1:]]  # the first GAD step is a warm-up


@pytest.mark.timeout(3600)  # minutes on a loaded 2-core CPU; pyproject's default is 600 s
def test_e2e_prefetch_vs_sync(benchmark, tmp_path):
    res = Results("e2e", rounds=GAD_STEPS - 1, config="embedded default, plan=gad", warmup_steps=WARMUP_STEPS,
                  gad_steps=GAD_STEPS, note="rounds = timed GAD steps per variant (the first GAD step is a warm-up); "
                                            "variants run one after the other, each in its own process")
    # the in-thread teacher too (full size; GADX_BENCH_E2E_THREAD=0/1 overrides): it is why prefetching looked slower
    thread = os.environ.get("GADX_BENCH_E2E_THREAD", "0" if SMOKE else "1") == "1"
    at = ["process"] + (["thread"] if thread else [])

    def compare():
        out = {}
        with teacher_process() as url:
            for v in ("sync", "prefetch"):
                out[(v, "process")] = run_json_scripts({v: variant_cmd(v, tmp_path / f"{v}-process", url)})[v]
        if "thread" in at:
            for v in ("sync", "prefetch"):
                out[(v, "thread")] = run_json_scripts({v: variant_cmd(v, tmp_path / f"{v}-thread")})[v]
        return out

    out = benchmark.pedantic(compare, rounds=1, iterations=1)
    for v in out.values():
        assert v["losses_finite"], [r.get("loss/g_pg") for r in v["steps"]]
    # the teacher's replies are seeded, so prefetching must not change what is trained
    runs = list(out.values())
    for other in runs[1:]:
        lo, ls = [r["loss/g_pg"] for r in runs[0]["steps"]], [r["loss/g_pg"] for r in other["steps"]]
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(lo, ls)), (lo, ls)
    ours = out[("prefetch", "process")]
    res.data["threads"] = ours["threads"]
    res.data["prefetch_depth"] = ours["prefetch_depth"]
    for where in at:
        sync, pre = out[("sync", where)], out[("prefetch", where)]
        tag = "teacher in its own process" if where == "process" else "teacher in a thread of the trainer"
        base = f"synchronous teacher, {tag}"
        res.row(f"{base}: GAD step tokens/s", _steps(sync, "tokens_per_s"), unit="tok/s")
        res.row(f"prefetched teacher, {tag}: GAD step tokens/s", _steps(pre, "tokens_per_s"), unit="tok/s",
                baseline=f"{base}: GAD step tokens/s", higher_is_better=True, goal=1.0 if where == "process" else None)
        for key in SPLIT[:-1]:
            label = key.split("/")[1]
            res.row(f"{base}: {label}", _steps(sync, key), unit="s")
            res.row(f"prefetched teacher, {tag}: {label}", _steps(pre, key), unit="s", baseline=f"{base}: {label}")
        res.data[f"steps_{where}"] = {"sync": sync["steps"], "prefetch": pre["steps"]}
    # where the CPU went, per variant: the trainer process, and its threads (the teacher client's
    # event loop "gadx-teacher", its cache writer, an in-thread server "gadx-serve"), whole run
    res.data["process_cpu_s"] = {f"{k[0]}-{k[1]}": v["process_cpu_s"] for k, v in out.items()}
    res.data["thread_cpu_s"] = {f"{k[0]}-{k[1]}": v["thread_cpu_s"] for k, v in out.items()}
    res.data["teacher_process_cpu_s_both_variants"] = teacher_process_cpu_s[-1] if teacher_process_cpu_s else None
    res.data["variant_load_avg_1m_after"] = {f"{k[0]}-{k[1]}": v["loadavg_1m"] for k, v in out.items()}
    res.write()
    print("\n" + table(res.data))


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
