"""Top level of `gadx train`: environment, the planned runs for every seed, and the final table.

    plan=compare (the default): out_dir/seed{S}/warmup/ (warmup + gate), then one folder per arm,
    out_dir/seed{S}/{seqkd,gad,oracle,frozen}/{metrics.jsonl, checkpoints/, student_hf/}
    out_dir/results.md, results.json, curves.png    (embedded world: gadx/train/evaluate.py's table)
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from .config import TrainConfig


def train_all(cfg: TrainConfig, *, run_dir_mode: str = "check") -> int:
    """Every run of ``run.plan`` for every seed, then the results table.
    "compare": warmup (+ the gate) once, then the arms of ``run.arms`` from its end (``_arms``);
    "gad" / "seqkd": one run each.
    ``run_dir_mode``: "check" (stop if ``run.out_dir`` holds a run with another config),
    "resume-anyway" or "overwrite" (gadx.train.rundir). SIGINT / SIGTERM during training
    save a checkpoint and raise ``stop.Interrupted`` (gadx.train.stop)."""
    from gadx.parallel import destroy_parallel, init_parallel

    from . import evaluate as ev
    from .rundir import prepare_run_dir
    from .env import Env
    from .stop import STOP

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
            rows = {}
            if env.world is not None:
                before = env.build()
                before.load_state_dict(env.initial_student_state())
                rows["before"] = ev.evaluate_student(env, before, "before")
                del before
            models = _arms(scfg, env, summaries, seed) if cfg.run.plan == "compare" else \
                {cfg.run.plan: _single(scfg, env, summaries, seed)}
            if env.world is not None:
                for name, model in models.items():
                    rows[name] = ev.evaluate_student(env, model, name)
                rows["teacher"] = ev.evaluate_teacher(env)
                per_seed.append({"seed": seed, "rows": rows})
        if env is not None and env.dims.rank == 0 and per_seed:
            table = ev.write_results(out, per_seed, summaries)
            print(f"\nResults over {len(per_seed)} seed(s), {cfg.run.eval_size} prompts per split:\n{table}")
            _plot(out)
        if dims.rank == 0:
            print(f"gadx.train: done in {time.perf_counter() - t0:.0f} s; outputs in {out}", file=sys.stderr)
        return 0
    finally:
        STOP.__exit__()
        if env is not None:
            env.close()
        if torch.distributed.is_initialized():
            destroy_parallel()


def _finish(r, scfg: TrainConfig, env, name: str, summaries: list, seed: int, summary: dict) -> None:
    """Save the run's student as an HF folder; add its summary (with seconds per student step)."""
    from gadx.models import save_pretrained
    from gadx.tokenizer import save_hf_tokenizer

    folder = Path(scfg.run.out_dir) / name / "student_hf"
    save_pretrained(r.G.model, folder)  # collective
    if env.dims.rank == 0:
        save_hf_tokenizer(env.tok, folder)
    steps = [h["time/step"] for h in r.history if "time/step" in h and h.get("stage") in ("seqkd", "gad")]
    summaries.append({"seed": seed, "run": name, **summary, "step_s": sum(steps) / len(steps) if steps else None})


def _single(scfg: TrainConfig, env, summaries: list, seed: int):
    """plan=gad or plan=seqkd: one run from the initial student."""
    from .trainer import Run

    name = scfg.run.plan
    r = Run(scfg, env, name=name, out_dir=Path(scfg.run.out_dir) / name)
    _finish(r, scfg, env, name, summaries, seed, r.train())
    return r.G.model


def arm_config(cfg: TrainConfig, arm: str) -> TrainConfig:
    """The config of one arm of plan=compare. Every arm: gad.steps student updates on the same
    prompts per step (prompts_per_step, the same data cursor), from the warmup-end student.
    seqkd: SFT on the teacher replies at constant lr seqkd.arm_lr (-1: where warmup's SFT schedule ended);
    gad / frozen: GRPO on the discriminator's reward (frozen: D not updated);
    oracle: GRPO on the exact teacher log-likelihood per token, D frozen (D is only a diagnostic there)."""
    from .config import sft_lr

    s = cfg.stages
    st = dataclasses.replace(s, sft_prompts_per_step=0)
    if arm == "seqkd":
        end_lr = s.seqkd.arm_lr if s.seqkd.arm_lr != -1 else sft_lr(s, s.warmup.lr, s.warmup.steps - 1, s.warmup.steps)
        st = dataclasses.replace(st, sft_lr_schedule="constant",
                                 seqkd=dataclasses.replace(s.seqkd, steps=s.gad.steps, lr=end_lr))
    elif arm == "oracle":
        st = dataclasses.replace(st, gad=dataclasses.replace(s.gad, reward="oracle", freeze_discriminator=True))
    elif arm == "frozen":
        st = dataclasses.replace(st, gad=dataclasses.replace(s.gad, freeze_discriminator=True))
    else:
        assert arm == "gad", arm
    return dataclasses.replace(cfg, stages=st)


def _arms(scfg: TrainConfig, env, summaries: list, seed: int) -> dict:
    """plan=compare for one seed: the warmup run (warmup + the gate, no GAD steps) once, then every
    arm from its end: the same student (bit-equal) and, for the GRPO arms, the same D and a fresh
    optimizer. GAD and frozen D are skipped when the gate fails. Returns {arm: its student}."""
    from .config import run_arms
    from .trainer import Run

    out = Path(scfg.run.out_dir)
    wcfg = dataclasses.replace(scfg, stages=dataclasses.replace(
        scfg.stages, gad=dataclasses.replace(scfg.stages.gad, steps=0)))
    w = Run(wcfg, env, name="gad", out_dir=out / "warmup")
    summary = w.train()
    summaries.append({"seed": seed, "run": "warmup", **summary, "step_s": None})
    # the warmup-end student and the D the gate passed: every arm's start (a D whose state lives outside
    # D.model, e.g. a reference of its own, must add it here)
    start = {"G": _host(w.G.model), **({"D": _host(w.D.model)} if w.D is not None else {})}
    models = {}
    for arm in run_arms(scfg):
        if arm in ("gad", "frozen") and w.gad_skipped:
            if env.dims.rank == 0:
                print(f"gadx.train: seed {seed}: the {arm} arm is skipped (D did not pass the gate)", file=sys.stderr)
            continue
        acfg = arm_config(scfg, arm)
        if arm == "seqkd":
            r = Run(acfg, env, name="seqkd", out_dir=out / arm, start={"G": start["G"]})
        else:
            r = Run(acfg, env, name="gad", out_dir=out / arm, gad_only=acfg.stages.gad.steps, start=start)
        _finish(r, acfg, env, arm, summaries, seed, r.train())
        models[arm] = r.G.model
    return models


def _host(model) -> dict:
    """A model's state on the host (an arm's start; each arm's Run copies it into its own model)."""
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in model.state_dict().items()}


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
