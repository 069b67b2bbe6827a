"""One training run (a "plan"): SeqKD, or warmup -> D gate -> GAD, resumable from its last checkpoint.

    run = Run(cfg, env, name="gad", out_dir=...)     # env: tokenizer, data, teacher (setup.py)
    summary = run.train()                             # resumes if out_dir has a checkpoint

Stages (and the step counter ``step`` shared by all of them):
    seqkd : ``cfg.seqkd_steps`` CE steps on teacher replies (the first warmup.steps - d_only_steps
            of them with ``stages.sft_prompts_per_step`` prompts, like the GAD run's warmup SFT)
    warmup: ``stages.warmup.steps`` at ``sft_prompts_per_step`` prompts: ``g_only_steps`` of G-only
            SFT (a from-scratch student's D is then copied from G), ``d_only_steps`` of D alone,
            then both: G's SFT every step, D's update every ``d_every`` steps
    gate  : D-only steps until D's held-out pairwise accuracy >= ``gad.d_acc_gate``
            (at most ``gad.d_gate_steps``); failing that, GAD is skipped with a loud
            message, since a chance-level D makes GAD a random walk (toy-findings.md)
    gad   : ``stages.gad.steps`` adversarial steps against the frozen warmup-end reference
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch



from gadx.sampler.chunked import generate_in_chunks, release

from . import checkpoint as ck
from .config import TrainConfig, sft_lr
from .data import Cursor
from .engine import Player
from .losses import pairwise_acc
from .metrics import MetricsLogger, Progress
from .gate import chance_warning, gate_decision
from .oracle import Oracle, heldout_ceiling
from .reduce import seq_values
from .step import Batch, StepContext, _score_step, gad_step, seqkd_step, warmup_step
from .stop import STOP, Boundary, Interrupted


def warn(msg: str) -> None:
    print(f"gadx.train: WARNING: {msg}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    stage: str
    steps: int


class Run:
    def __init__(self, cfg: TrainConfig, env, *, name: str, out_dir: str | Path, recorder: list[str] | None = None,
                 gad_only: int = 0, discriminator: str | Path | None = None):
        """gad_only=N: skip warmup and gate, run N GAD steps (reference = the starting student);
        discriminator: an HF folder (head="score") D starts from instead of the student."""
        assert name in ("seqkd", "gad")
        self.cfg, self.env, self.name, self.out = cfg, env, name, Path(out_dir)
        self.dims = env.dims
        self.rank0 = self.dims.rank == 0
        s = cfg.stages
        self.plan = [Plan("seqkd", cfg.seqkd_steps)] if name == "seqkd" else [
            Plan("warmup", s.warmup.steps), Plan("gate", s.gad.d_gate_steps), Plan("gad", s.gad.steps)]
        if gad_only:
            self.plan = [Plan("gad", gad_only)]
        self.disc_path = discriminator
        self.history: list[dict[str, Any]] = []  # every logged row
        self.recorder = recorder
        self.nonfinite_run = 0
        self.nonfinite_total = 0
        self.gad_skipped = False
        self.last_heldout_acc: float | None = None
        self.last_check: dict[str, Any] = {}  # gate="ceiling": acc, se, n_pairs, acc_star of the last held-out check
        self.d_acc_gad_start: float | None = None  # D's held-out accuracy when the policy updates began

    # ---- building -------------------------------------------------------------------------

    def _players(self) -> None:
        cfg, env = self.cfg, self.env
        s = cfg.stages
        torch.manual_seed(cfg.run.seed)
        student = env.build(seed=cfg.run.seed)
        student.load_state_dict(env.initial_student_state())
        lr = s.seqkd.lr if self.name == "seqkd" else s.warmup.lr
        self.G = Player(student, lr=lr, weight_decay=s.weight_decay, clip_grad=s.grad_clip)
        # the embedded world's exact teacher: the oracle reward and the GAD step's diagnostics
        self.oracle = Oracle.from_env(env, floor=s.gad.oracle_floor, required=s.gad.reward == "oracle") \
            if self.name == "gad" else None
        self.D = self.ref = None
        if self.name == "gad":
            if self.disc_path is not None:
                disc = env.load(self.disc_path, head="score")
            else:
                disc = env.build(head="score", seed=cfg.run.seed + 1)
                if not env.from_scratch:  # pretrained student: D starts from its initial weights
                    copy_trunk(student, disc)
            self.D = Player(disc, lr=s.warmup.d_lr, weight_decay=s.weight_decay, clip_grad=s.grad_clip)

    def _ctx(self) -> StepContext:
        env = self.env
        return StepContext(
            student=self.G, disc=self.D, ref=self.ref, engine=env.engine,
            sync_weights=lambda: env.engine.load_weights(env.engine_weights(self.G.model)),
            eos_ids=env.eos_ids, stages=self.cfg.stages, budget=self.cfg.parallel.micro_batch_tokens,
            dims=self.dims, sample_seed=(self.cfg.run.seed * 1_000_003) % (2**31), recorder=self.recorder,
            oracle=self.oracle,
        )

    def _start_gad(self) -> None:
        """End of warmup: freeze a reference copy of the student; set the GAD learning rates."""
        s = self.cfg.stages
        ref = self.env.build()
        ref.load_state_dict(self.G.model.state_dict())
        self.ref = Player(ref, trainable=False)
        self.G.set_lr(s.gad.lr)
        self.D.set_lr(s.gad.d_lr)

    # ---- state ----------------------------------------------------------------------------

    def _state(self, stage_i: int, stage_step: int, step: int) -> dict[str, Any]:
        """The run's global state besides tensors (the same on every rank)."""
        return {"cursor": self.cursor.state, "stage_i": stage_i, "stage_step": stage_step, "step": step,
                "gad_skipped": self.gad_skipped, "nonfinite_total": self.nonfinite_total,
                "nonfinite_run": self.nonfinite_run}

    def _tensors(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The models and optimizers a checkpoint holds, by name."""
        models, optimizers = {"G": self.G.chunks[0]}, {"G": self.G.opt}
        if self.D is not None:
            models["D"], optimizers["D"] = self.D.chunks[0], self.D.opt
        if self.ref is not None:
            models["ref"] = self.ref.model
        return models, optimizers

    def _save(self, stage_i: int, stage_step: int, step: int) -> None:
        models, optimizers = self._tensors()
        ck.save_checkpoint(self.out / "checkpoints", step, models, optimizers, self._state(stage_i, stage_step, step),
                           self.cfg.to_json(),
                           {"run": self.name, "stage": self.plan[min(stage_i, len(self.plan) - 1)].stage,
                            "stage_step": stage_step, "tp": self.dims.tp, "pp": self.dims.pp, "dp": self.dims.dp})

    def _resume(self) -> tuple[int, int, int]:
        """Continue from the last checkpoint, at this run's layout whatever the one it was saved at."""
        path = ck.latest_checkpoint(self.out / "checkpoints")
        if path is None:
            return 0, 0, 0
        if "ref" in ck.saved_models(path):
            self._start_gad()  # builds the reference; the restored optimizer state then carries the GAD lr
        models, optimizers = self._tensors()
        st = ck.load_checkpoint(path, models, optimizers)
        self.cursor = Cursor.from_state(st["cursor"])
        self.gad_skipped = st["gad_skipped"]
        self.nonfinite_total, self.nonfinite_run = st["nonfinite_total"], st["nonfinite_run"]
        if self.rank0:
            meta = ck.load_meta(path)
            saved = f"tp={meta['tp']} pp={meta['pp']} dp={meta['dp']}"
            now = f"tp={self.dims.tp} pp={self.dims.pp} dp={self.dims.dp}"
            print(f"gadx.train: resumed {self.name} from {path} (step {st['step']}"
                  + (f"; saved at {saved}, resharded to {now}" if saved != now else "") + ")", file=sys.stderr)
        return st["stage_i"], st["stage_step"], st["step"]

    # ---- data -----------------------------------------------------------------------------

    def _prompts_at(self, step: int) -> int:
        """Global prompts of a step: warmup (and SeqKD's matching SFT steps) may use a larger batch,
        stages.sft_prompts_per_step."""
        s = self.cfg.stages
        sft_steps = s.warmup.steps - (s.warmup.d_only_steps if self.name == "seqkd" else 0)
        return s.sft_prompts_per_step if s.sft_prompts_per_step and step < sft_steps else s.prompts_per_step

    def _share(self, P: int) -> slice:
        """This DP rank's contiguous share of a step's P prompts."""
        k = P // self.dims.dp
        return slice(self.dims.dp_rank * k, (self.dims.dp_rank + 1) * k)

    def _batches(self, cursor_state: dict, step: int):
        """Every upcoming step's teacher requests, all DP shares (global rank 0 fetches them all)."""
        cur = Cursor.from_state(cursor_state)
        while True:
            yield [self.env.request(i) for i in cur.next(self._prompts_at(step))]
            step += 1

    def _next_batch(self, step: int) -> Batch:
        P = self._prompts_at(step)
        share = self._share(P)
        idx = self.cursor.next(P)
        teacher = self.prefetch.get(idx, share)  # collective: rank 0's replies, as token ids
        prompts = [self.env.prompt_ids(i) for i in idx[share]]
        finished = [t[-1] in self.env.eos_ids for t in teacher]
        return Batch(prompts, teacher, finished, global_prompts=P, first=share.start,
                     teacher_wait_s=self.prefetch.last_wait_s)

    # ---- D health -------------------------------------------------------------------------

    @torch.no_grad()
    def heldout_acc(self, ctx: StepContext, step: int) -> float:
        """D's pairwise accuracy on held-out prompts: teacher reply vs one fresh student sample each
        (gate="ceiling": gad.gate_samples each, ties 1/2, with its error and acc*: self.last_check)."""
        env = self.env
        prompts, teacher = env.heldout()
        ceiling = self.cfg.stages.gad.gate == "ceiling"
        k = self.cfg.stages.gad.gate_samples if ceiling else 1
        ctx.sync_weights()
        # in chunks of the sampler's rollout batch; each row samples as in one call (gadx/sampler/chunked.py)
        roll = generate_in_chunks(env.engine, [p for p in prompts for _ in range(k)],
                                  max_new_tokens=self.cfg.stages.max_response_len,
                                  temperature=self.cfg.stages.temperature, eos_ids=env.eos_ids, seed=10_000_019 + step)
        release(env.engine)
        seqs_p = [p for p in prompts for _ in range(k + 1)]
        seqs_r = [x for i, t in enumerate(teacher) for x in (t, *roll.responses[i * k : (i + 1) * k])]
        mbs = ctx.pack(seqs_p, seqs_r)
        sc = seq_values(self.dims, mbs, self.D.run(mbs, _score_step(self.D.model), forward_only=True), "scores", len(seqs_r))
        sc = sc.view(-1, k + 1)
        if not ceiling:
            return float(pairwise_acc(sc[:, 0], sc[:, 1:]))
        self.last_check = heldout_ceiling(ctx, self.oracle, prompts, teacher, roll, sc[:, 0], sc[:, 1:])
        return self.last_check["acc"]

    def _gate_open(self, acc: float) -> bool:
        g = self.cfg.stages.gad
        if g.gate == "fixed":
            return acc >= g.d_acc_gate
        c = self.last_check
        d = gate_decision(acc=c["acc"], se=c["se"], n_pairs=c["n_pairs"], acc_star=c["acc_star"], frac=g.gate_frac,
                          z=g.gate_z, min_pairs=g.gate_min_pairs, fixed=g.d_acc_gate)
        if self.rank0:
            print(f"gadx.train: gate: {d.reason}", file=sys.stderr, flush=True)
        return d.open

    def _chance(self, acc: float) -> str | None:
        g = self.cfg.stages.gad
        if g.gate == "fixed":
            return f"D's held-out pairwise accuracy fell to {acc:.3f} (chance is 0.5); GAD updates now add noise" if acc < 0.55 else None
        c = self.last_check
        return chance_warning(acc=c["acc"], se=c["se"], n_pairs=c["n_pairs"], acc_star=c["acc_star"], z=g.gate_z)

    # ---- the loop -------------------------------------------------------------------------

    def _warn(self, msg: str) -> None:
        """Every rank sees the same (reduced) numbers: one copy of a warning is enough."""
        if self.rank0:
            warn(msg)

    def train(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        self._players()
        self.cursor = Cursor(env.num_train, cfg.run.seed)
        stage_i, stage_step, step = self._resume()
        self.log = MetricsLogger(self.out, enabled=self.rank0, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                                 config=cfg.to_dict(), resume_step=step)
        self.prefetch = env.prefetcher(self._batches(self.cursor.state, step))
        ctx = self._ctx()
        total = sum(p.steps for p in self.plan)
        bar = Progress(total, f"{self.name}", enabled=self.rank0 and cfg.run.progress)
        bar.n = step
        boundary = Boundary(every_steps=cfg.run.checkpoint_every, every_minutes=cfg.run.checkpoint_minutes,
                            device=self.dims.device)
        if stage_i < len(self.plan) and self.plan[stage_i].stage == "gad" and self.ref is None:  # gad_only
            self._start_gad()
            ctx = self._ctx()
        try:
            STOP.in_loop = True  # a signal now stops at the next step boundary, after a save
            while stage_i < len(self.plan):
                plan = self.plan[stage_i]
                if plan.stage == "gate" and stage_step == 0:
                    if self.ref is None:
                        self._start_gad()
                        ctx = self._ctx()
                    acc = self.heldout_acc(ctx, step)
                    self.last_heldout_acc = acc
                    if self._gate_open(acc):
                        bar.total -= plan.steps
                        stage_i, stage_step = stage_i + 1, 0
                        continue
                if plan.stage == "gad" and self.gad_skipped:
                    bar.total -= plan.steps
                    break
                if stage_step >= plan.steps:
                    if plan.stage == "gate":
                        self.gad_skipped = True
                        self._warn(f"D's held-out pairwise accuracy {self.last_heldout_acc:.3f} did not pass the gate "
                             f"(stages.gad.gate={cfg.stages.gad.gate}, d_acc_gate={cfg.stages.gad.d_acc_gate}) after {plan.steps} D-only steps: "
                             "skipping the GAD stage (a chance-level discriminator turns it into a random walk)")
                    stage_i, stage_step = stage_i + 1, 0
                    self._save(stage_i, 0, step)
                    continue
                if cfg.run.max_steps and step >= cfg.run.max_steps:
                    break
                m = self._one_step(ctx, plan.stage, stage_step, step)
                step, stage_step = step + 1, stage_step + 1
                bar.update(1, **{k: m[k] for k in ("loss/g_ce", "loss/d", "d_acc/heldout") if isinstance(m.get(k), float)})
                if plan.stage == "gate" and "d_acc/heldout" in m and self._gate_open(m["d_acc/heldout"]):
                    bar.total -= plan.steps - stage_step
                    stage_i, stage_step = stage_i + 1, 0
                save, stop = boundary.check(step)
                if save:
                    self._save(stage_i, stage_step, step)
                    boundary.saved()
                if stop:
                    raise Interrupted(STOP.signum, step, str(ck.latest_checkpoint(self.out / "checkpoints")))
        finally:
            STOP.in_loop = False
            self.prefetch.close() if hasattr(self.prefetch, "close") else None
            self.log.close()
        return {"steps": step, "gad_skipped": self.gad_skipped, "nonfinite_total": self.nonfinite_total,
                "d_acc_heldout_gad_start": self.d_acc_gad_start, "d_acc_heldout_end": self.last_heldout_acc}

    def _g_only_steps(self) -> int:
        """G-only SFT steps at the start of warmup (and the matching first steps of SeqKD)."""
        w = self.cfg.stages.warmup
        if w.g_only_steps >= 0:
            return w.g_only_steps
        return max(w.steps - 2 * w.d_only_steps, 0) if self.env.from_scratch else 0

    def _warmup(self, ctx: StepContext, batch: Batch, stage_step: int, step: int) -> dict[str, Any]:
        """G-only SFT, then D alone, then both. A from-scratch student's D is copied from G when D starts."""
        g_only, d_only = self._g_only_steps(), self.cfg.stages.warmup.d_only_steps
        if stage_step < g_only:
            return warmup_step(ctx, batch, step, d_only=False, g_only=True)
        if stage_step == g_only and self.env.from_scratch:
            copy_trunk(self.G.model, self.D.model)
        if stage_step < g_only + d_only:
            return warmup_step(ctx, batch, step, d_only=True)
        d_due = (stage_step - g_only - d_only) % self.cfg.stages.warmup.d_every == 0
        return warmup_step(ctx, batch, step, d_only=False, g_only=not d_due)

    def _one_step(self, ctx: StepContext, stage: str, stage_step: int, step: int) -> dict[str, Any]:
        cfg = self.cfg
        ctx.times.clear()
        t0 = time.perf_counter()
        batch = self._next_batch(step)
        if stage in ("seqkd", "warmup"):
            base = cfg.stages.seqkd.lr if stage == "seqkd" else cfg.stages.warmup.lr
            self.G.set_lr(sft_lr(cfg.stages, base, stage_step, self.plan[0].steps))
        elif stage == "gad" and cfg.stages.gad.lr_warmup:
            # a linear ramp: Adam's first steps after a stage change are sign-like (fresh moments) or
            # scaled by the SFT stage's moments, either way unlike the steady state (RESULTS_embedded.md)
            self.G.set_lr(cfg.stages.gad.lr * min(1.0, (stage_step + 1) / cfg.stages.gad.lr_warmup))
        if stage == "seqkd":
            m = seqkd_step(ctx, batch, step)
        elif stage == "warmup":
            m = self._warmup(ctx, batch, stage_step, step)
        elif stage == "gate":
            m = warmup_step(ctx, batch, step, d_only=True)
        else:
            if self.d_acc_gad_start is None:
                self.d_acc_gad_start = self.last_heldout_acc
            m = gad_step(ctx, batch, step, update_d=not cfg.stages.gad.freeze_discriminator)
        dt = time.perf_counter() - t0
        if step % cfg.run.log_every == 0 or self._health_due(stage, stage_step, step):
            m = {k: _plain(v) for k, v in m.items()}  # the step's one batch of host syncs
        if self._health_due(stage, stage_step, step):
            acc = self.heldout_acc(ctx, step)
            self.last_heldout_acc = acc
            m["d_acc/heldout"] = acc
            if self.cfg.stages.gad.gate == "ceiling":
                m.update({f"d_acc/heldout_{k}": v for k, v in self.last_check.items() if k != "acc" and v is not None})
            msg = self._chance(acc) if stage == "gad" else None
            if msg:
                self._warn(f"step {step}: {msg}")
        if cfg.run.eval_every and step % cfg.run.eval_every == 0 and stage != "gate":
            m.update(self.small_eval(ctx))
        skipped = bool(m.get("skipped/g")) or bool(m.get("skipped/d"))
        self.nonfinite_run = self.nonfinite_run + 1 if skipped else 0
        self.nonfinite_total += int(skipped)
        if self.nonfinite_run > cfg.run.max_nonfinite:
            raise RuntimeError(f"{self.nonfinite_run} consecutive steps with non-finite loss or gradients "
                               f"(run.max_nonfinite={cfg.run.max_nonfinite}); stopping at step {step}. "
                               "Lower the learning rate or check the data.")
        if step % cfg.run.log_every:
            return m
        ls, lt = m.get("len/student"), m.get("len/teacher")
        if stage == "gad" and ls and lt and ls > cfg.stages.length_drift * lt:
            self._warn(f"step {step}: student responses ({ls:.1f} tokens) exceed {cfg.stages.length_drift}x the teacher's ({lt:.1f})")
        m.update({"stage": stage, "lr/g": self.G.opt.param_groups[0]["lr"], "time/step": dt, "time/teacher_wait": batch.teacher_wait_s,
                  **{f"time/{k}": v for k, v in ctx.times.items()},
                  "tokens_per_s": m.pop("tokens") / dt, "teacher/cost_usd": self.env.teacher_cost(),
                  "nonfinite_total": self.nonfinite_total})
        if "tokens_generated" in m:
            m["rollout_tokens_per_s"] = m.pop("tokens_generated") / max(ctx.times.get("rollout", dt), 1e-9)
        self.history.append(self.log.log(step, m))
        return m

    def _health_due(self, stage: str, stage_step: int, step: int) -> bool:
        """D's held-out accuracy: every gate step, and every run.eval_every steps once D exists."""
        if self.D is None or (stage == "warmup" and stage_step < self._g_only_steps()):
            return False
        return stage == "gate" or (self.cfg.run.eval_every > 0 and step % self.cfg.run.eval_every == 0)

    def small_eval(self, ctx: StepContext) -> dict[str, float]:
        """gadx.eval.evaluate_small on the current student (greedy; rank 0 decodes, no RNG used)."""
        from gadx.eval import evaluate_small

        cfg = self.cfg
        suites = [x for x in cfg.run.eval_suites.split(",") if x]
        engine = self.env.engine
        ctx.sync_weights()
        try:
            if not suites and self.env.world is None:
                return {}
            if not self.rank0 and not self.env.sharded_rollout:  # a sharded sampler needs every TP rank
                return {}
            out = evaluate_small(engine, self.env.tok, eos_ids=self.env.eos_ids, suites=suites,
                                 limit=cfg.run.eval_limit, max_new_tokens=cfg.stages.max_response_len,
                                 world=self.env.world, seed=cfg.run.seed,
                                 batch_size=min(8, getattr(engine, "max_batch", 8)))  # 8: evaluate_small's default
        finally:
            release(engine)  # the KV cache and the gathered weights, until the next rollout
        return out if self.rank0 else {}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v


def copy_trunk(student, disc) -> None:
    """Initialise D's transformer from the student's weights (its score head stays freshly initialised)."""
    sd = {k: v for k, v in student.gpt.state_dict().items() if not k.startswith("output_layer")}
    missing, unexpected = disc.gpt.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("score_head") for k in missing), missing


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
