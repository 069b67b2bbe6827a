"""Top level of `gadx train`: environment, the planned runs for every seed, and the final table.

    out_dir/seed{S}/seqkd/{metrics.jsonl, checkpoints/}   out_dir/seed{S}/gad/...
    out_dir/results.md, results.json, curves.png           (embedded world: the Table-2-like comparison)
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from .config import TrainConfig


def train_all(cfg: TrainConfig, *, run_dir_mode: str = "check") -> int:
    """Every run of ``run.plan`` ("compare": SeqKD then GAD) for every seed, then the results table.
    ``run_dir_mode``: "check" (stop if ``run.out_dir`` holds a run with another config),
    "resume-anyway" or "overwrite" (gadx.train.rundir). SIGINT / SIGTERM during training
    save a checkpoint and raise ``stop.Interrupted`` (gadx.train.stop)."""
    from gadx.models import save_pretrained
    from gadx.parallel import destroy_parallel, init_parallel
    from gadx.tokenizer import save_hf_tokenizer

    from . import evaluate as ev
    from .rundir import prepare_run_dir
    from .env import Env
    from .stop import STOP
    from .trainer import Run

    t0 = time.perf_counter()
    out = Path(cfg.run.out_dir)
    per_seed, summaries = [], []
    env = None
    try:
        STOP.__enter__()
        # the same call Env makes first: the process group exists for the barrier below
        dims = init_parallel(cfg.parallel.tp, cfg.parallel.pp, seed=cfg.run.seed)
        prepare_run_dir(cfg, run_dir_mode, rank=dims.rank)
        torch.distributed.barrier()
        for k in range(cfg.run.seeds):
            seed = cfg.run.seed + k
            scfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=seed,
                                       out_dir=str(out / f"seed{seed}") if cfg.run.seeds > 1 else cfg.run.out_dir))
            if env is None:
                env = Env(scfg)
            env.cfg = scfg
            env._init_state = None
            rank0 = env.dims.rank == 0
            names = {"compare": ["seqkd", "gad"], "gad": ["gad"], "seqkd": ["seqkd"]}[cfg.run.plan]
            rows = {}
            if env.world is not None:
                before = env.build()
                before.load_state_dict(env.initial_student_state())
                rows["before"] = ev.evaluate_student(env, before, cfg.run.eval_size)
            for name in names:
                r = Run(scfg, env, name=name, out_dir=Path(scfg.run.out_dir) / name)
                summary = r.train()
                summaries.append({"seed": seed, "run": name, **summary})
                save_pretrained(r.G.model, Path(scfg.run.out_dir) / name / "student_hf")  # collective
                if rank0:
                    save_hf_tokenizer(env.tok, Path(scfg.run.out_dir) / name / "student_hf")
                if env.world is not None:
                    rows["GAD" if name == "gad" else "SeqKD"] = ev.evaluate_student(env, r.G.model, cfg.run.eval_size)
            if env.world is not None:
                rows["teacher"] = ev.evaluate_teacher(env, cfg.run.eval_size)
                per_seed.append(rows)
        if rank0 and per_seed:
            table = ev.write_results(out, per_seed, summaries)
            print(f"\nResults over {len(per_seed)} seed(s) (mean ± std), {cfg.run.eval_size} prompts per split:\n{table}")
            _plot(out)
        if rank0:
            print(f"gadx.train: done in {time.perf_counter() - t0:.0f} s; outputs in {out}", file=sys.stderr)
        return 0
    finally:
        STOP.__exit__()
        if env is not None:
            env.close()
        if torch.distributed.is_initialized():
            destroy_parallel()


def run_steps(cfg: TrainConfig, n_steps: int, *, student: str | Path, discriminator: str | Path,
              recorder: list[str] | None = None, checkpoint_every: int = 0) -> list[dict]:
    """``n_steps`` GAD steps from HF folders at ``cfg.parallel``'s layout; the logged metrics of each step.

    Every rank calls it (torchrun or one process). ``student``: an HF folder with the
    student and its tokenizer (also the frozen reference); ``discriminator``: an HF folder
    saved from a head="score" model. Data and teacher come from ``cfg`` (the embedded
    world by default). No warmup, no gate: step 0 is the first GAD step. Outputs go
    to ``cfg.run.out_dir``; the parallel state stays up for the caller to tear down. With
    ``checkpoint_every`` > 0 it saves every that many steps and resumes from ``out_dir``'s last
    checkpoint (returning only the steps it ran), at any layout.
    """
    from .env import Env
    from .trainer import Run

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, student=str(student)),
                              run=dataclasses.replace(cfg.run, log_every=1, checkpoint_every=checkpoint_every))
    env = Env(cfg)
    try:
        r = Run(cfg, env, name="gad", out_dir=Path(cfg.run.out_dir) / "gad", recorder=recorder,
                gad_only=n_steps, discriminator=discriminator)
        r.train()
        return r.history
    finally:
        env.close()


def _plot(out: Path) -> None:
    from .curves import plot

    files = sorted(out.glob("**/metrics.jsonl"))
    if files:
        plot(files, out / "curves.png")
