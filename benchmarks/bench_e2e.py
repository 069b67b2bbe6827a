"""End to end: the embedded default's GAD steps, tokens/s and time split, teacher prefetched vs synchronous.

    pytest benchmarks/bench_e2e.py --benchmark-only -s
    python benchmarks/bench_e2e.py --teacher prefetch --out-dir /tmp/e2e   # one variant, JSON on stdout
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_e2e.py   # seconds: a 1-layer student, 2 prompts x 2 samples

A short ``gad`` plan of the embedded default (synthetic world, its teacher served
over HTTP in a thread, tiny from-scratch student): ``WARMUP_STEPS`` warmup steps,
the D gate forced open, then ``GAD_STEPS`` GAD steps. The trainer's own
metrics.jsonl gives each step's time split (rollout / teacher wait / scoring /
update) and tokens/s; the first GAD step is a warm-up and the rest are medianed.

Peer: the same run with the teacher called synchronously at the start of each
step (submit the step's requests, wait for all), the baseline a trainer without
a prefetcher has. ``teacher.prefetch_depth`` must be >= 1, so the synchronous
variant gives the trainer's TeacherFeed the ``SyncFetch`` below instead of its Prefetcher. Each variant runs
in its own process with its own teacher cache, so both pay for every reply; the two
run at the same time so they see the same machine load (GADX_BENCH_SERIAL=1: one
after the other).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _models import run_json_scripts  # noqa: E402
from _smoke import pick  # noqa: E402

WARMUP_STEPS, GAD_STEPS = pick(full=(2, 4), smoke=(2, 2))
# smoke: the tiny trainer-test shape (tests/train/conftest.py), so the two variants take seconds
SMOKE_SETS = pick(full={}, smoke={
    "model.hidden_size": 32, "model.intermediate_size": 64, "model.num_layers": 1, "model.num_heads": 2,
    "model.num_kv_heads": 1, "stages.prompts_per_step": 2, "stages.sft_prompts_per_step": 2, "stages.n_samples": 2,
    "stages.max_prompt_len": 48, "stages.max_response_len": 12, "parallel.micro_batch_tokens": 256,
    "data.held_out_size": 4, "run.eval_size": 4, "run.eval_limit": 4})
SPLIT = ("time/step", "time/rollout", "time/teacher_wait", "time/scoring", "time/update", "tokens_per_s")
SHOWN = SPLIT + ("len/student", "len/teacher", "loss/g_pg")  # per-step rows kept in the results JSON


def overrides(out_dir: Path) -> list[str]:
    sets = {
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


def run_variant(teacher: str, out_dir: Path) -> dict:
    import torch

    from gadx.parallel import destroy_parallel
    from gadx.train.config import load_config
    from gadx.train.setup import Env
    from gadx.train.trainer import Run

    cfg, rest = load_config(overrides(out_dir))
    assert not rest, rest
    env = Env(cfg)
    if teacher == "sync":
        from gadx.train.teacher_feed import TeacherFeed

        env.prefetcher = lambda batches: TeacherFeed(batches, remote=env.remote_teacher, client=env.client,
                                                     encode=env.reply_ids, prefetcher=SyncFetch)
    try:
        summary = Run(cfg, env, name="gad", out_dir=out_dir / "gad").train()
    finally:
        env.close()
        destroy_parallel()
    rows = [json.loads(line) for line in (out_dir / "gad" / "metrics.jsonl").read_text().splitlines()]
    gad = [r for r in rows if r.get("stage") == "gad"]
    assert len(gad) == GAD_STEPS and not summary["gad_skipped"], (len(gad), summary)
    timed = gad[1:]
    med = {k: statistics.median(float(r.get(k, 0.0)) for r in timed) for k in SPLIT}
    return {"teacher": teacher, "median": med, "steps": [{k: r.get(k) for k in ("step", *SHOWN)} for r in gad], "prefetch_depth": cfg.teacher.prefetch_depth,
            "threads": torch.get_num_threads(), "loadavg_1m": os.getloadavg()[0],
            "losses_finite": all(isinstance(r.get("loss/g_pg"), float) for r in gad)}


def variant_cmd(teacher: str, out_dir: Path) -> list[str]:
    return [sys.executable, __file__, "--teacher", teacher, "--out-dir", str(out_dir)]


@pytest.mark.timeout(3600)  # minutes on a loaded 2-core CPU; pyproject's default is 600 s
def test_e2e_prefetch_vs_sync(benchmark, record, tmp_path):
    load_before = os.getloadavg()[0]

    def compare():
        return run_json_scripts({v: variant_cmd(v, tmp_path / v) for v in ("prefetch", "sync")})

    res = benchmark.pedantic(compare, rounds=1, iterations=1)
    ours, sync = res["prefetch"], res["sync"]
    for v in (ours, sync):
        assert v["losses_finite"], [r.get("loss/g_pg") for r in v["steps"]]
    # the teacher's replies are seeded, so prefetching must not change what is trained
    lo, ls = [r["loss/g_pg"] for r in ours["steps"]], [r["loss/g_pg"] for r in sync["steps"]]
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(lo, ls)), (lo, ls)
    o, s = ours["median"], sync["median"]
    extra = {"config": "embedded default, plan=gad", "gad_steps_timed": GAD_STEPS - 1,
             "prefetch_depth": ours["prefetch_depth"], "split_prefetch_s": o, "split_sync_s": s,
             "steps_prefetch": ours["steps"], "steps_sync": sync["steps"],
             "threads": ours["threads"], "loadavg_1m": [load_before, ours["loadavg_1m"], sync["loadavg_1m"]]}
    benchmark.extra_info.update(extra)
    r = record(group="e2e", name="GAD step tokens/s, embedded default", ours=o["tokens_per_s"],
               peer_name="same run, synchronous teacher calls", peer=s["tokens_per_s"], unit="tok/s",
               higher_is_better=True, extra=extra)
    record(group="e2e", name="teacher wait per GAD step", ours=o["time/teacher_wait"],
           peer_name="same run, synchronous teacher calls", peer=s["time/teacher_wait"], unit="s",
           higher_is_better=False)
    fmt = lambda d: ", ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in d.items())  # noqa: E731
    print(f"\n[e2e] prefetch (depth {ours['prefetch_depth']}): {fmt(o)}\n[e2e] synchronous: {fmt(s)}\n"
          f"[e2e] tokens/s ratio {r:.2f}x | load {extra['loadavg_1m']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=["prefetch", "sync"], required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    a = ap.parse_args(argv)
    print(json.dumps(run_variant(a.teacher, a.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
