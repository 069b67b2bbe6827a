"""One GRPO/GAD update step: gadx's ``gad_step`` vs TRL's ``GRPOTrainer`` on the same tiny Qwen2.

    pytest benchmarks/bench_grpo_step.py --benchmark-only -s      # both sides, rows via ``record``
    python benchmarks/bench_grpo_step.py --side gadx --folder CKPT  # one side, JSON on stdout
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_grpo_step.py         # seconds: 2 x 2 samples, 8 + 8 tokens

Both sides load one random Qwen2 folder (benchmarks/_models.py) and do the same
work per step: 8 prompts x 8 samples, 32 prompt tokens, 64 new tokens sampled at
temperature 0.8, reference log-probs with a KL term (TRL ``beta=0.001``, gadx
``kl_coef=0.001``), a clipped policy-gradient loss, backward and an AdamW step
(lr 1e-6, no weight decay, gradient clipping on), fp32, gradient checkpointing
off. TRL gets a random-but-deterministic reward (a hash of the completion ids):
a constant reward would zero every advantage (docs/design/pitfalls.md) and leave only the
KL term, which costs the same compute but is not the step a user runs. gadx's
reward is its discriminator; D's cost (scoring + Bradley-Terry update) is timed
separately so "gadx step without D" compares like for like. gadx also computes
the old log-probs in an extra no-grad forward, which TRL skips when
num_iterations=1; that stays inside gadx's time.

Each side runs in its own process so peak RSS is its own, both at once so they see
the same machine load (GADX_BENCH_SERIAL=1: one after the other). Step time is the
median of ``STEPS`` steps after ``WARMUP`` warm-up steps (TRL: a callback around
each optimizer step of ``trainer.train()``; the step includes its generation), as
wall time and as process CPU time (the steadier figure on a loaded machine).

gadx's micro-batch token budget is sized as the trainer requires (config.d_group_tokens:
a prompt's teacher reply and its N samples share one micro-batch for D's Bradley-Terry
loss), never below the trainer's default. Without TRL installed the gadx side still
runs (and its checks); then the comparison is skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _models import (EOS, build_tiny_qwen2, load_tokenizer, peak_rss_mib, prompt_text, random_prompts, rss_mib,
                     run_json_scripts)  # noqa: E402
from _smoke import pick  # noqa: E402

P, N, PROMPT_LEN, NEW_TOKENS = pick(full=(8, 8, 32, 64), smoke=(2, 2, 8, 8))
TEMPERATURE, KL, LR, GRAD_CLIP = 0.8, 0.001, 1e-6, 1.0
WARMUP, STEPS = pick(full=(1, 3), smoke=(0, 1))


def step_prompts(vocab_size: int) -> list[list[list[int]]]:
    """The prompts of every step (warm-up ones first), the same on both sides."""
    flat = random_prompts(P * (WARMUP + STEPS), PROMPT_LEN, vocab_size=vocab_size, seed=1)
    return [flat[i : i + P] for i in range(0, len(flat), P)]


# ---- gadx -----------------------------------------------------------------------------------


class _TimedPlayer:
    """Delegates to a Player and adds up the wall time of its verbs (the discriminator's cost: scores, train_bt)."""

    def __init__(self, player):
        self._p, self.seconds, self.cpu_seconds = player, 0.0, 0.0

    def __getattr__(self, name):
        return getattr(self._p, name)

    def _timed(self, fn, *a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0

    def scores(self, *a, **kw):
        return self._timed(self._p.scores, *a, **kw)

    def train_bt(self, *a, **kw):
        return self._timed(self._p.train_bt, *a, **kw)


def run_gadx(folder: Path) -> dict:
    import torch

    from gadx.models import build_model, from_pretrained, hf_state_dict
    from gadx.parallel import init_parallel
    from gadx.sampler import KVCacheSampler
    from gadx.train.config import GadCfg, ParallelCfg, StagesCfg, d_group_tokens
    from gadx.train.player import Player
    from gadx.train.step import Batch, StepContext, gad_step

    dims = init_parallel(1, 1, seed=0)
    student = from_pretrained(folder, parallel=dims)
    ref = from_pretrained(folder, parallel=dims)
    disc = build_model(student.config, head="score", parallel=dims, seed=1)  # D's weights do not change its cost
    G = Player(student, lr=LR, weight_decay=0.0, clip_grad=GRAD_CLIP)
    D = _TimedPlayer(Player(disc, lr=LR, weight_decay=0.0, clip_grad=GRAD_CLIP))
    R = Player(ref, trainable=False)
    cfg = student.config
    engine = KVCacheSampler(cfg, max_batch=P * N, max_seq_len=PROMPT_LEN + NEW_TOKENS)
    stages = StagesCfg(prompts_per_step=P, n_samples=N, temperature=TEMPERATURE, max_prompt_len=PROMPT_LEN,
                       max_response_len=NEW_TOKENS, grad_clip=GRAD_CLIP, weight_decay=0.0,
                       gad=GadCfg(kl_coef=KL, lr=LR, d_lr=LR))
    # the budget the trainer's config.validate demands (D packs a prompt's teacher reply with its samples)
    budget = max(ParallelCfg().micro_batch_tokens, d_group_tokens(stages))
    ctx = StepContext(student=G, disc=D, ref=R, engine=engine,
                      sync_weights=lambda: engine.load_weights(hf_state_dict(student)),
                      eos_ids=[EOS], stages=stages, budget=budget, dims=dims)
    # teacher replies: fixed random token strings of the same length as the samples
    replies = random_prompts(P * (WARMUP + STEPS), NEW_TOKENS - 1, vocab_size=cfg.vocab_size, seed=2)
    base_rss = rss_mib()
    rows = []
    for s, prompts in enumerate(step_prompts(cfg.vocab_size)):
        teacher = [r + [EOS] for r in replies[s * P : (s + 1) * P]]
        batch = Batch(prompts, teacher, [True] * P, global_prompts=P)
        ctx.times.clear()
        D.seconds = D.cpu_seconds = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        m = gad_step(ctx, batch, s)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append({"total_s": total, "d_s": D.seconds, "cpu_s": cpu, "d_cpu_s": D.cpu_seconds,
                     **{f"{k}_s": v for k, v in ctx.times.items()},
                     "loss": float(m["loss/g_pg"]), "len": float(m["len/student"]),
                     "skipped": bool(m["skipped/g"])})
    return {**_summary("gadx", rows, base_rss, threads=torch.get_num_threads()), "budget": budget}


# ---- TRL ------------------------------------------------------------------------------------


def hash_reward(completions, completion_ids, **_):
    """A reward in [0, 1) that depends only on the completion's ids: nonzero advantages, reproducible."""
    return [zlib.crc32(json.dumps(list(map(int, ids))).encode()) / 2**32 for ids in completion_ids]


def run_trl(folder: Path, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = load_tokenizer(folder)
    vocab = tok.vocab_size
    prompts = [p for step in step_prompts(vocab) for p in step]
    texts = [prompt_text(p) for p in prompts]
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in texts] == prompts, "tokenizer round trip"
    args = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=P * N, num_generations=N, gradient_accumulation_steps=1,
        max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_k=0, top_p=1.0, beta=KL, epsilon=0.2,
        learning_rate=LR, weight_decay=0.0, max_grad_norm=GRAD_CLIP, gradient_checkpointing=False, use_cpu=True,
        bf16=False, max_steps=WARMUP + STEPS, logging_steps=1, save_strategy="no", report_to="none",
        shuffle_dataset=False, disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.t0, self.c0, self.times, self.logs = 0.0, 0.0, [], []

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.logs.append(logs)

    clock = Clock()
    trainer = GRPOTrainer(model=str(folder), reward_funcs=hash_reward, args=args, processing_class=tok,
                          train_dataset=Dataset.from_dict({"prompt": texts}), callbacks=[clock])
    base_rss = rss_mib()
    trainer.train()
    assert len(clock.times) == WARMUP + STEPS and len(clock.logs) == WARMUP + STEPS, (clock.times, clock.logs)
    rows = [{"total_s": t, "cpu_s": c, "loss": float(lg["loss"]), "len": float(lg.get("completions/mean_length", float("nan"))),
             "skipped": False} for (t, c), lg in zip(clock.times, clock.logs)]
    return _summary("trl", rows, base_rss, threads=torch.get_num_threads())


# ---- both -----------------------------------------------------------------------------------


def _summary(side: str, rows: list[dict], base_rss: float, *, threads: int) -> dict:
    timed = rows[WARMUP:]
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0] if k.endswith("_s")}
    return {"side": side, "steps": rows, "median": med, "rss_before_mib": base_rss, "peak_rss_mib": peak_rss_mib(),
            "threads": threads, "loadavg_1m": os.getloadavg()[0]}


def side_cmd(side: str, folder: Path, out_dir: Path) -> list[str]:
    return [sys.executable, __file__, "--side", side, "--folder", str(folder), "--out-dir", str(out_dir)]


@pytest.mark.timeout(3600)  # minutes on a loaded 2-core CPU; pyproject's default is 600 s
def test_grpo_step_vs_trl(benchmark, record, tmp_path):
    folder = build_tiny_qwen2(tmp_path / "qwen2")
    load_before = os.getloadavg()[0]
    sides = ("gadx", "trl") if _importable("trl") and _importable("datasets") else ("gadx",)

    def compare():
        return run_json_scripts({s: side_cmd(s, folder, tmp_path / s) for s in sides})

    res = benchmark.pedantic(compare, rounds=1, iterations=1)
    for side in res.values():
        assert len(side["steps"]) == WARMUP + STEPS, side
        for r in side["steps"]:
            assert math.isfinite(r["loss"]) and not r["skipped"], (side["side"], r)
    if "trl" not in res:
        pytest.skip("trl (the peer) is not installed: gadx's side ran and passed its checks; pip install -e '.[bench]'")
    ours, trl = res["gadx"], res["trl"]
    g, t = ours["median"], trl["median"]
    # per-step differences, then the median: the D share is taken from the same step it was part of
    no_d = statistics.median(r["total_s"] - r["d_s"] for r in ours["steps"][WARMUP:])
    no_d_cpu = statistics.median(r["cpu_s"] - r["d_cpu_s"] for r in ours["steps"][WARMUP:])
    extra = {"model": "tiny qwen2 (benchmarks/_models.py TINY_QWEN2)", "batch": f"{P} prompts x {N} samples",
             "prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS, "kl": KL, "steps_timed": STEPS,
             "gadx_split_s": g, "gadx_mean_len": statistics.mean(r["len"] for r in ours["steps"][WARMUP:]),
             "trl_mean_len": statistics.mean(r["len"] for r in trl["steps"][WARMUP:]),
             "budget_tokens": ours["budget"], "threads": ours["threads"], "loadavg_1m": [load_before, ours["loadavg_1m"], trl["loadavg_1m"]]}
    benchmark.extra_info.update(extra)
    name = f"update step, {P}x{N} x ({PROMPT_LEN}+{NEW_TOKENS}) tok"
    r1 = record(group="grpo_step", name=f"{name}, gadx without D", ours=no_d, peer_name="trl.GRPOTrainer",
                peer=t["total_s"], unit="s", higher_is_better=False, extra=extra)
    r_cpu = record(group="grpo_step", name=f"{name}, gadx without D, process CPU time", ours=no_d_cpu,
                   peer_name="trl.GRPOTrainer", peer=t["cpu_s"], unit="CPU s", higher_is_better=False)
    r2 = record(group="grpo_step", name=f"{name}, gadx with D (score + BT update)", ours=g["total_s"],
                peer_name="trl.GRPOTrainer", peer=t["total_s"], unit="s", higher_is_better=False)
    record(group="grpo_step", name=f"{name}, gadx with D, process CPU time", ours=g["cpu_s"],
           peer_name="trl.GRPOTrainer", peer=t["cpu_s"], unit="CPU s", higher_is_better=False)
    r3 = record(group="grpo_step", name="peak RSS above the loaded models", ours=ours["peak_rss_mib"] - ours["rss_before_mib"],
                peer_name="trl.GRPOTrainer", peer=trl["peak_rss_mib"] - trl["rss_before_mib"], unit="MiB",
                higher_is_better=False, extra={"gadx_peak_rss_mib": ours["peak_rss_mib"],
                                               "trl_peak_rss_mib": trl["peak_rss_mib"]})
    print(f"\n[grpo step] gadx {g} | without D {no_d:.3f}s | TRL {t} | speed-up {r1:.2f}x (CPU time {r_cpu:.2f}x) "
          f"(with D {r2:.2f}x) | peak RSS gadx {ours['peak_rss_mib']:.0f} MiB, TRL {trl['peak_rss_mib']:.0f} MiB "
          f"(above models: {r3:.2f}x) | load {extra['loadavg_1m']}")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["gadx", "trl"], required=True)
    ap.add_argument("--folder", type=Path, required=True, help="HF folder from benchmarks/_models.build_tiny_qwen2")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/gadx_bench_grpo"))
    a = ap.parse_args(argv)
    res = run_gadx(a.folder) if a.side == "gadx" else run_trl(a.folder, a.out_dir)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
