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

Each side runs in its own process (its own peak RSS), one after the other, TRL first (never
at once: on a 2-core machine two sides would time each other). Step time is the median (with
min-max) of ``STEPS`` = 10 steps after ``WARMUP`` warm-up step (TRL: a callback around each
optimizer step of ``trainer.train()``; the step includes its generation), as wall time and as
process CPU time (the steadier figure on a loaded machine). TRL's step is split into its
rollout phase (``_generate_and_score_completions``: generation, rewards, reference log-probs)
and its update; gadx's into rollout / scoring / update, and within them the old and reference
log-prob forwards, D's scoring and update, and G's update (wall and CPU time per player).

``GADX_BENCH_RESULTS=1`` writes benchmarks/results/grpo_step.json (benchmarks/results.py).
``--side gadx --profile FILE`` writes torch.profiler's top ops of the first timed step.

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
from results import Results, table  # noqa: E402

P, N, PROMPT_LEN, NEW_TOKENS = pick(full=(8, 8, 32, 64), smoke=(2, 2, 8, 8))
TEMPERATURE, KL, LR, GRAD_CLIP = 0.8, 0.001, 1e-6, 1.0
GOAL_CPU = 1.5  # issue 17: >= 1.5x TRL's step in CPU time, without D
WARMUP, STEPS = pick(full=(1, 10), smoke=(0, 2))


def step_prompts(vocab_size: int) -> list[list[list[int]]]:
    """The prompts of every step (warm-up ones first), the same on both sides."""
    flat = random_prompts(P * (WARMUP + STEPS), PROMPT_LEN, vocab_size=vocab_size, seed=1)
    return [flat[i : i + P] for i in range(0, len(flat), P)]


# ---- gadx -----------------------------------------------------------------------------------


class _TimedPlayer:
    """Delegates to a Player and adds up the wall and CPU time of its verbs: forward-only runs
    (G: the old log-probs; R: the reference log-probs; D: its scores) and training runs (forward +
    backward + optimizer step), so the step's split is measured, not guessed."""

    def __init__(self, player):
        self._p = player
        self.reset()

    def reset(self):
        self.t = {"fwd": 0.0, "train": 0.0}
        self.c = {"fwd": 0.0, "train": 0.0}

    @property
    def seconds(self):
        return sum(self.t.values())

    @property
    def cpu_seconds(self):
        return sum(self.c.values())

    def __getattr__(self, name):
        return getattr(self._p, name)

    def _timed(self, what, fn, *a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            self.t[what] += time.perf_counter() - t0
            self.c[what] += time.process_time() - c0

    # the Player's verbs: forward-only runs and training runs (forward + backward + optimizer step)
    def token_logprobs(self, *a, **kw):
        return self._timed("fwd", self._p.token_logprobs, *a, **kw)

    def scores(self, *a, **kw):
        return self._timed("fwd", self._p.scores, *a, **kw)

    def train_bt(self, *a, **kw):
        return self._timed("train", self._p.train_bt, *a, **kw)

    def train_grpo(self, *a, **kw):
        return self._timed("train", self._p.train_grpo, *a, **kw)


def run_gadx(folder: Path, profile: Path | None = None) -> dict:
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
    G = _TimedPlayer(Player(student, lr=LR, weight_decay=0.0, clip_grad=GRAD_CLIP))
    D = _TimedPlayer(Player(disc, lr=LR, weight_decay=0.0, clip_grad=GRAD_CLIP))
    R = _TimedPlayer(Player(ref, trainable=False))
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
    prof = _profiler(profile)
    for s, prompts in enumerate(step_prompts(cfg.vocab_size)):
        teacher = [r + [EOS] for r in replies[s * P : (s + 1) * P]]
        batch = Batch(prompts, teacher, [True] * P, global_prompts=P)
        ctx.times.clear()
        for p in (G, D, R):
            p.reset()
        if prof is not None and s == WARMUP:
            prof.__enter__()  # the first timed step only: the profiler's overhead stays out of the others
        t0, c0 = time.perf_counter(), time.process_time()
        m = gad_step(ctx, batch, s)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        if prof is not None and s == WARMUP:
            prof.__exit__(None, None, None)
        rows.append({"total_s": total, "d_s": D.seconds, "cpu_s": cpu, "d_cpu_s": D.cpu_seconds,
                     **{f"{k}_s": v for k, v in ctx.times.items()},
                     "g_old_logp_s": G.t["fwd"], "g_old_logp_cpu_s": G.c["fwd"], "ref_logp_s": R.t["fwd"],
                     "ref_logp_cpu_s": R.c["fwd"], "g_update_s": G.t["train"], "g_update_cpu_s": G.c["train"],
                     "d_score_s": D.t["fwd"], "d_score_cpu_s": D.c["fwd"], "d_update_s": D.t["train"],
                     "d_update_cpu_s": D.c["train"],
                     "loss": float(m["loss/g_pg"]), "len": float(m["len/student"]),
                     "skipped": bool(m["skipped/g"])})
    if prof is not None:
        _write_profile(prof, profile)
    return {**_summary("gadx", rows, base_rss, threads=torch.get_num_threads()), "budget": budget}


def _profiler(path):
    if path is None:
        return None
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU], record_shapes=False)


def _write_profile(prof, path: Path) -> None:
    """The top ops by self CPU time and by total CPU time (one timed step), as text."""
    ka = prof.key_averages()
    path.write_text("# by self CPU time\n" + ka.table(sort_by="self_cpu_time_total", row_limit=30)
                    + "\n# by total CPU time\n" + ka.table(sort_by="cpu_time_total", row_limit=40))


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
    # TRL's own split: "_generate_and_score_completions" is the rollout phase (generation, rewards,
    # reference log-probs: everything before the loss); "_generate" the sampling alone. The rest of
    # the step is the update (loss forward + backward, clipping, optimizer).
    phases = {}
    for attr, key in (("_generate_and_score_completions", "gen_and_score"), ("_generate", "generate")):
        if hasattr(trainer, attr):
            phases[key] = _clock_method(trainer, attr)
    base_rss = rss_mib()
    trainer.train()
    assert len(clock.times) == WARMUP + STEPS and len(clock.logs) == WARMUP + STEPS, (clock.times, clock.logs)
    rows = [{"total_s": t, "cpu_s": c, "loss": float(lg["loss"]), "len": float(lg.get("completions/mean_length", float("nan"))),
             "skipped": False} for (t, c), lg in zip(clock.times, clock.logs)]
    for key, calls in phases.items():
        if len(calls) == len(rows):  # one call per step (num_iterations=1, steps_per_generation=1)
            for r, (t, c) in zip(rows, calls):
                r[f"{key}_s"], r[f"{key}_cpu_s"] = t, c
    for r in rows:
        if "gen_and_score_s" in r:
            r["update_s"], r["update_cpu_s"] = r["total_s"] - r["gen_and_score_s"], r["cpu_s"] - r["gen_and_score_cpu_s"]
    return _summary("trl", rows, base_rss, threads=torch.get_num_threads())


def _clock_method(obj, attr: str) -> list[tuple[float, float]]:
    """Replace ``obj.attr`` by a wrapper that appends (wall, CPU) seconds of each outermost call."""
    fn, calls, depth = getattr(obj, attr), [], [0]

    def timed(*a, **kw):
        t0, c0 = time.perf_counter(), time.process_time()
        depth[0] += 1
        try:
            return fn(*a, **kw)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                calls.append((time.perf_counter() - t0, time.process_time() - c0))

    setattr(obj, attr, timed)
    return calls


# ---- both -----------------------------------------------------------------------------------


def _summary(side: str, rows: list[dict], base_rss: float, *, threads: int) -> dict:
    timed = rows[WARMUP:]
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0] if k.endswith("_s")}
    return {"side": side, "steps": rows, "median": med, "rss_before_mib": base_rss, "peak_rss_mib": peak_rss_mib(),
            "threads": threads, "loadavg_1m": os.getloadavg()[0]}


def side_cmd(side: str, folder: Path, out_dir: Path) -> list[str]:
    return [sys.executable, __file__, "--side", side, "--folder", str(folder), "--out-dir", str(out_dir)]


@pytest.mark.timeout(3600)  # minutes on a loaded 2-core CPU; pyproject's default is 600 s
def test_grpo_step_vs_trl(benchmark, tmp_path):
    folder = build_tiny_qwen2(tmp_path / "qwen2")
    sides = ("trl", "gadx") if _importable("trl") and _importable("datasets") else ("gadx",)
    res = Results("grpo_step", rounds=STEPS, threads=None, warmup_steps=WARMUP, model="tiny qwen2 (benchmarks/_models.py)",
                  batch=f"{P} prompts x {N} samples, {PROMPT_LEN} prompt + {NEW_TOKENS} new tokens, T={TEMPERATURE}",
                  kl=KL, note="one process per side, run one after the other; rounds = timed steps per side")

    def compare():  # serially: TRL first, then gadx (never at once)
        return run_json_scripts({s: side_cmd(s, folder, tmp_path / s) for s in sides})

    out = benchmark.pedantic(compare, rounds=1, iterations=1)
    for side in out.values():
        assert len(side["steps"]) == WARMUP + STEPS, side
        for r in side["steps"]:
            assert math.isfinite(r["loss"]) and not r["skipped"], (side["side"], r)
    ours = out["gadx"]
    g = ours["steps"][WARMUP:]
    res.data["threads"] = ours["threads"]
    res.data["budget_tokens"] = ours["budget"]
    res.data["gadx_mean_len"] = statistics.mean(r["len"] for r in g)
    trl_name = "trl.GRPOTrainer step"
    step_name = "gadx step without D (like for like)"
    if "trl" in out:
        t = out["trl"]["steps"][WARMUP:]
        res.data["trl_mean_len"] = statistics.mean(r["len"] for r in t)
        res.row(trl_name, [r["total_s"] for r in t], unit="s", cpu_times=[r["cpu_s"] for r in t])
        for key, label in (("gen_and_score", "TRL rollout phase (generate, rewards, ref log-probs)"),
                           ("generate", "TRL generation alone"), ("update", "TRL update (loss fwd+bwd, optimizer)")):
            if f"{key}_s" in t[0]:
                res.row(label, [r[f"{key}_s"] for r in t], unit="s", cpu_times=[r[f"{key}_cpu_s"] for r in t])
    base = trl_name if "trl" in out else None
    res.row(step_name, [r["total_s"] - r["d_s"] for r in g], unit="s", cpu_times=[r["cpu_s"] - r["d_cpu_s"] for r in g],
            baseline=base, goal=GOAL_CPU if base else None, goal_on="cpu")
    res.row("gadx step with D (score + Bradley-Terry update)", [r["total_s"] for r in g], unit="s",
            cpu_times=[r["cpu_s"] for r in g], baseline=base)
    for key, label in (("rollout_s", "gadx rollout"), ("scoring_s", "gadx scoring (old + ref log-probs, D scores)"),
                       ("g_old_logp_s", "gadx old log-prob forward (skippable at policy_epochs=1)"),
                       ("ref_logp_s", "gadx reference log-prob forward"), ("d_score_s", "gadx D scoring forward"),
                       ("update_s", "gadx update phase (D + G)"), ("g_update_s", "gadx G update (fwd+bwd, optimizer)"),
                       ("d_update_s", "gadx D Bradley-Terry update")):
        if key in g[0]:
            # CPU time where the player wrapper measured it (the phases from ctx.times are wall only)
            cpu_key = key[:-2] + "_cpu_s"
            cpu = [r[cpu_key] for r in g] if cpu_key in g[0] else None
            res.row(label, [r[key] for r in g], unit="s", cpu_times=cpu)
    if "trl" in out:
        trl = out["trl"]
        res.row("trl.GRPOTrainer peak RSS above the loaded model", [trl["peak_rss_mib"] - trl["rss_before_mib"]],
                unit="MiB", peak_rss_mib=trl["peak_rss_mib"])
    res.row("gadx peak RSS above the loaded models", [ours["peak_rss_mib"] - ours["rss_before_mib"]], unit="MiB",
            baseline="trl.GRPOTrainer peak RSS above the loaded model" if "trl" in out else None,
            peak_rss_mib=ours["peak_rss_mib"])
    res.data["side_load_avg_1m_after"] = {k: v["loadavg_1m"] for k, v in out.items()}
    res.write()
    print("\n" + table(res.data))
    if "trl" not in out:
        pytest.skip("trl (the peer) is not installed: gadx's side ran and passed its checks; pip install -e '.[bench]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", choices=["gadx", "trl"], required=True)
    ap.add_argument("--folder", type=Path, required=True, help="HF folder from benchmarks/_models.build_tiny_qwen2")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/gadx_bench_grpo"))
    ap.add_argument("--profile", type=Path, metavar="TXT",
                    help="gadx side: torch.profiler's top ops of the first timed step, written here")
    a = ap.parse_args(argv)
    res = run_gadx(a.folder, a.profile) if a.side == "gadx" else run_trl(a.folder, a.out_dir)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
