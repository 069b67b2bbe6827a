"""One training run: SeqKD, or warmup -> D gate -> GAD, resumable from its last checkpoint.

    run = Run(cfg, env, name="gad", out_dir=...)     # env: tokenizer, data, teacher, models (env.py)
    summary = run.train()                             # resumes if out_dir has a checkpoint

``Run.train`` is a straight loop: the stage plan (stages.py, a pure object) says what comes next
(freeze the reference, check the gate, one training step, the next stage, done) and the run does it
on its models. The step functions are in step.py; metric handling between the step and the
logger in metrics.py.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from gadx.sampler.chunked import generate_in_chunks, release

from . import checkpoint as ck
from .data import Cursor
from .player import Player
from .losses import pairwise_acc
from .metrics import MetricsLogger, NonfiniteGuard, Progress, finish_row, host_values, length_drift
from .gate import chance_warning, gate_decision
from .lm_oracle import LMOracle
from .oracle import Oracle, heldout_ceiling
from .stages import CheckGate, DHealth, Done, NextStage, RunState, StagePlan, StartGad, TrainStep
from .step import Batch, StepContext, gad_step, seqkd_step, warmup_step, with_ref
from .stop import STOP, Boundary, Interrupted
from .config import TrainConfig, d_lrs
from .disc_kind import disc_kind


def warn(msg: str) -> None:
    print(f"gadx.train: WARNING: {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, cfg: TrainConfig, env, *, name: str, out_dir: str | Path, recorder: list[str] | None = None,
                 gad_only: int = 0, discriminator: str | Path | None = None, start: dict | None = None):
        """gad_only=N: skip warmup and gate, run N GAD steps (reference = the starting student);
        discriminator: an HF folder (head="score") D starts from instead of the student;
        start: {"G": state_dict[, "D": state_dict]} the run starts from (plan=compare's arms)."""
        assert name in ("seqkd", "gad")
        self.cfg, self.env, self.name, self.out = cfg, env, name, Path(out_dir)
        self.dims = env.dims
        self.rank0 = self.dims.rank == 0
        self.stages = StagePlan.from_config(cfg, name, from_scratch=env.from_scratch, gad_only=gad_only)
        self.disc_path = discriminator
        self.start = start or {}
        self.history: list[dict[str, Any]] = []  # every logged row
        self.recorder = recorder
        self.nonfinite = NonfiniteGuard(cfg.run.max_nonfinite)
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
        # an arm's shared start (plan=compare), loaded before the optimizer copies any master weights;
        # a checkpoint, when resuming, overrides it
        student.load_state_dict(self.start["G"] if "G" in self.start else env.initial_student_state())
        lr = s.seqkd.lr if self.name == "seqkd" else s.warmup.lr
        self.G = Player(student, lr=lr, weight_decay=s.weight_decay, clip_grad=s.grad_clip)
        # the embedded world's exact teacher: the oracle reward and the GAD step's diagnostics
        self.oracle = None
        if self.name == "gad" and s.gad.oracle_model and s.gad.reward == "oracle":  # real data: the teacher's weights
            self.oracle = LMOracle(s.gad.oracle_model, env.tok, device=next(student.parameters()).device)
        elif self.name == "gad":
            self.oracle = Oracle.from_env(env, floor=s.gad.oracle_floor, required=s.gad.reward == "oracle")
        self.D = self.ref = None
        if self.name == "gad":
            # the implicit D is a whole LM (head "lm"): a copy of the student when it starts, so D = 0 then
            dc = cfg.discriminator
            head, implicit = disc_kind(cfg)  # shared with gadx plan
            if self.disc_path is not None:
                disc = env.load(self.disc_path, head=head)
            else:
                disc = env.build(head=head, seed=cfg.run.seed + 1)
                if not env.from_scratch:  # pretrained student: D starts from its initial weights
                    start_d(student, disc, dc.kind)
            if "D" in self.start:
                disc.load_state_dict(self.start["D"])
            self.D = Player(disc, lr=d_lrs(cfg)[0], weight_decay=s.weight_decay, clip_grad=s.grad_clip, implicit=implicit)

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
        self.D.set_lr(d_lrs(self.cfg)[1])

    # ---- state ----------------------------------------------------------------------------

    def _state(self, state: RunState) -> dict[str, Any]:
        """The run's global state besides tensors (the same on every rank)."""
        return {"cursor": self.cursor.state, "stage_i": state.stage_i, "stage_step": state.stage_step,
                "step": state.step, "gad_skipped": state.gad_skipped, "nonfinite_total": self.nonfinite.total,
                "nonfinite_run": self.nonfinite.run}

    def _tensors(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The models and optimizers a checkpoint holds, by name."""
        models, optimizers = {"G": self.G.chunks[0]}, {"G": self.G.opt}
        if self.D is not None:
            models["D"], optimizers["D"] = self.D.chunks[0], self.D.opt
        if self.ref is not None:
            models["ref"] = self.ref.model
        return models, optimizers

    def _save(self, state: RunState) -> None:
        models, optimizers = self._tensors()
        stages = self.stages.stages
        ck.save_checkpoint(self.out / "checkpoints", state.step, models, optimizers, self._state(state),
                           self.cfg.to_json(),
                           {"run": self.name, "stage": stages[min(state.stage_i, len(stages) - 1)].name,
                            "stage_step": state.stage_step, "tp": self.dims.tp, "pp": self.dims.pp, "dp": self.dims.dp})

    def _resume(self) -> RunState:
        """Continue from the last checkpoint, at this run's layout whatever the one it was saved at."""
        path = ck.latest_checkpoint(self.out / "checkpoints")
        if path is None:
            return RunState()
        has_ref = "ref" in ck.saved_models(path)
        if has_ref:
            self._start_gad()  # builds the reference; the restored optimizer state then carries the GAD lr
        models, optimizers = self._tensors()
        st = ck.load_checkpoint(path, models, optimizers)
        self.cursor = Cursor.from_state(st["cursor"])
        self.gad_skipped = st["gad_skipped"]
        self.nonfinite = NonfiniteGuard(self.cfg.run.max_nonfinite, total=st["nonfinite_total"], run=st["nonfinite_run"])
        if self.rank0:
            meta = ck.load_meta(path)
            saved = f"tp={meta['tp']} pp={meta['pp']} dp={meta['dp']}"
            now = f"tp={self.dims.tp} pp={self.dims.pp} dp={self.dims.dp}"
            print(f"gadx.train: resumed {self.name} from {path} (step {st['step']}"
                  + (f"; saved at {saved}, resharded to {now}" if saved != now else "") + ")", file=sys.stderr)
        return RunState(stage_i=st["stage_i"], stage_step=st["stage_step"], step=st["step"],
                        gad_skipped=st["gad_skipped"], gad_started=has_ref)

    # ---- data -----------------------------------------------------------------------------

    def _share(self, P: int) -> slice:
        """This DP rank's contiguous share of a step's P prompts."""
        k = P // self.dims.dp
        return slice(self.dims.dp_rank * k, (self.dims.dp_rank + 1) * k)

    def _batches(self, cursor_state: dict, step: int):
        """Every upcoming step's teacher requests, all DP shares (global rank 0 fetches them all)."""
        cur = Cursor.from_state(cursor_state)
        while True:
            yield [self.env.request(i) for i in cur.next(self.stages.prompts_at(step))]
            step += 1

    def _next_batch(self, step: int) -> Batch:
        P = self.stages.prompts_at(step)
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
        if self.D.implicit is not None:  # the reference: the current student's log-likelihoods (one forward)
            with_ref(mbs, self.G.seq_logprobs(mbs, len(seqs_r), temperature=self.cfg.stages.temperature))
        sc = self.D.scores(mbs, len(seqs_r))
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
        """The plan's actions, one after another, from the last checkpoint (if any) to the end."""
        cfg, env, plan = self.cfg, self.env, self.stages
        self._players()
        self.cursor = Cursor(env.num_train, cfg.run.seed)
        state = self._resume()
        self.log = MetricsLogger(self.out, enabled=self.rank0, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                                 config=cfg.to_dict(), resume_step=state.step)
        self.prefetch = env.prefetcher(self._batches(self.cursor.state, state.step))
        ctx = self._ctx()
        bar = Progress(plan.total_steps(state), self.out.name, enabled=self.rank0 and cfg.run.progress)  # the run folder: warmup, gad, oracle, ...
        bar.n = state.step
        boundary = Boundary(every_steps=cfg.run.checkpoint_every, every_minutes=cfg.run.checkpoint_minutes,
                            device=self.dims.device)
        d_health: DHealth | None = None  # the gate's last verdict on D
        try:
            STOP.in_loop = True  # a signal now stops at the next step boundary, after a save
            while not isinstance(action := plan.next_action(state, d_health), Done):
                if isinstance(action, StartGad):
                    self._start_gad()
                    ctx = self._ctx()
                    state = plan.after_start_gad(state)
                elif isinstance(action, CheckGate):
                    self.last_heldout_acc = self.heldout_acc(ctx, state.step)
                    d_health = DHealth(state.stage_i, state.stage_step, self._gate_open(self.last_heldout_acc))
                elif isinstance(action, NextStage):
                    if action.gad_skipped_now:
                        self._warn_gate_failed(self.stages.stages[state.stage_i].steps)
                    state = action.state
                    self.gad_skipped = state.gad_skipped
                    if action.save:
                        self._save(state)
                    bar.total = plan.total_steps(state)
                else:
                    m = self._one_step(ctx, action)
                    bar.update(1, **{k: m[k] for k in ("loss/g_ce", "loss/d", "d_acc/heldout") if isinstance(m.get(k), float)})
                    if action.stage == "gate" and "d_acc/heldout" in m:
                        d_health = DHealth(state.stage_i, state.stage_step + 1, self._gate_open(m["d_acc/heldout"]))
                    state = plan.after_step(state, d_health)
                    bar.total = plan.total_steps(state)
                    save, stop = boundary.check(state.step)
                    if save:
                        self._save(state)
                        boundary.saved()
                    if stop:
                        raise Interrupted(STOP.signum, state.step, str(ck.latest_checkpoint(self.out / "checkpoints")))
        finally:
            STOP.in_loop = False
            self.prefetch.close() if hasattr(self.prefetch, "close") else None
            self.log.close()
        return {"steps": state.step, "gad_skipped": self.gad_skipped, "nonfinite_total": self.nonfinite.total,
                "d_acc_heldout_gad_start": self.d_acc_gad_start, "d_acc_heldout_end": self.last_heldout_acc}

    def _warn_gate_failed(self, gate_steps: int) -> None:
        g = self.cfg.stages.gad
        self._warn(f"D's held-out pairwise accuracy {self.last_heldout_acc:.3f} did not pass the gate "
                   f"(stages.gad.gate={g.gate}, d_acc_gate={g.d_acc_gate}) after {gate_steps} D-only steps: "
                   "skipping the GAD stage (a chance-level discriminator turns it into a random walk)")

    def _train(self, ctx: StepContext, a: TrainStep, batch: Batch) -> dict[str, Any]:
        """The step functions of step.py for the action's kind of step."""
        if a.kind == "seqkd":
            return seqkd_step(ctx, batch, a.step)
        if a.kind == "gad":
            if self.d_acc_gad_start is None:
                self.d_acc_gad_start = self.last_heldout_acc
            return gad_step(ctx, batch, a.step, update_d=not self.cfg.stages.gad.freeze_discriminator)
        # "sft": G's SFT alone; "d": D's Bradley-Terry alone (on its rollout); "sft+d": both
        return warmup_step(ctx, batch, a.step, d_only=a.kind == "d", g_only=a.kind == "sft")

    def _one_step(self, ctx: StepContext, a: TrainStep) -> dict[str, Any]:
        cfg, step = self.cfg, a.step
        ctx.times.clear()
        t0 = time.perf_counter()
        batch = self._next_batch(step)
        if a.g_lr is not None:
            self.G.set_lr(a.g_lr)
        if a.d_from_g:  # a from-scratch student's D starts from G once D's updates begin
            start_d(self.G.model, self.D.model, self.cfg.discriminator.kind)
            # the optimizer's fp32 main copies of bf16 weights follow the copied weights (fp32: views, a no-op)
            self.D.opt.reload_model_params()
        m = self._train(ctx, a, batch)
        dt = time.perf_counter() - t0
        logged = step % cfg.run.log_every == 0
        if logged or a.check_d:
            m = host_values(m)  # the step's one batch of host syncs
        if a.check_d:
            acc = self.heldout_acc(ctx, step)
            self.last_heldout_acc = acc
            m["d_acc/heldout"] = acc
            if self.cfg.stages.gad.gate == "ceiling":
                m.update({f"d_acc/heldout_{k}": v for k, v in self.last_check.items() if k != "acc" and v is not None})
            msg = self._chance(acc) if a.stage == "gad" else None
            if msg:
                self._warn(f"step {step}: {msg}")
        if a.evaluate:
            m.update(self.small_eval(ctx))
        self.nonfinite.update(m, step)
        if not logged:
            return m
        msg = length_drift(m, cfg.stages.length_drift) if a.stage == "gad" else None
        if msg:
            self._warn(f"step {step}: {msg}")
        finish_row(m, stage=a.stage, lr_g=self.G.opt.param_groups[0]["lr"], dt=dt, teacher_wait_s=batch.teacher_wait_s,
                   times=ctx.times, cost_usd=self.env.teacher_cost(), nonfinite_total=self.nonfinite.total)
        self.history.append(self.log.log(step, m))
        return m

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


def start_d(student, disc, kind: str) -> None:
    """D's start from the student: the trunk under a fresh score head, or (implicit) the whole model,
    LM head included, so the implicit D = beta * (log P_theta - log S) is 0 at that moment."""
    if kind == "implicit":
        disc.load_state_dict(student.state_dict(), strict=True)
        return
    copy_trunk(student, disc)


def copy_trunk(student, disc) -> None:
    """Initialise D's transformer from the student's weights (its score head stays freshly initialised)."""
    sd = {k: v for k, v in student.gpt.state_dict().items() if not k.startswith("output_layer")}
    missing, unexpected = disc.gpt.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("score_head") for k in missing), missing
