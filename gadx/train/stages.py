"""The stage plan of one training run as a pure object: what to do next, given where the run is.

    plan = StagePlan.from_config(cfg, "gad", from_scratch=True)
    state = RunState()                                   # or RunState(**checkpoint state), gad_started=...
    while not isinstance(a := plan.next_action(state, d_health), Done):
        ...                                              # the trainer carries the action out
        state = plan.after_step(state, a, d_health) if isinstance(a, TrainStep) else ...

No model, tensor or rank here: numbers in, an action out, so every transition is unit-tested
without building anything (tests/train/test_stage_plan.py). The stages, with one step counter
``step`` shared by all of them:

    seqkd : CE steps on teacher replies (the SeqKD baseline run)
    warmup: G-only SFT steps, then D alone, then both (G's SFT every step, D's update every
            ``d_every`` steps); a from-scratch student's D is copied from G when D starts
    gate  : D-only steps until D passes the gate (gate.py, decided by the trainer: ``d_health``),
            at most ``steps`` of them; failing that, GAD is skipped, since a chance-level D makes GAD
            a random walk (docs/design/toy-findings.md)
    gad   : adversarial steps against the reference frozen when the gate stage starts

The actions: ``StartGad`` (freeze the reference, set GAD learning rates), ``CheckGate`` (measure D
on held-out prompts and decide the gate now), ``TrainStep`` (one step: which updates, G's lr, whether
to measure D and evaluate afterwards), ``NextStage`` (a stage is over: move on, maybe save) and
``Done``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import StagesCfg, TrainConfig, sft_lr

STAGE_NAMES = ("seqkd", "warmup", "gate", "gad")


@dataclass(frozen=True)
class Stage:
    name: str  # one of STAGE_NAMES
    steps: int


@dataclass(frozen=True)
class RunState:
    """Where a run is in its plan: stage index, steps done in it and in all, whether GAD was
    skipped (the gate failed) and whether the reference has been frozen. The first four are
    checkpointed under these names; ``gad_started`` is whether the checkpoint holds a reference."""

    stage_i: int = 0
    stage_step: int = 0
    step: int = 0
    gad_skipped: bool = False
    gad_started: bool = False


@dataclass(frozen=True)
class DHealth:
    """The gate's verdict on D's held-out accuracy, measured at (stage_i, stage_step)."""

    stage_i: int
    stage_step: int
    passes: bool


@dataclass(frozen=True)
class StartGad:
    pass


@dataclass(frozen=True)
class CheckGate:
    pass


@dataclass(frozen=True)
class NextStage:
    state: RunState  # the state to continue from
    save: bool  # a checkpoint at the stage boundary
    gad_skipped_now: bool = False  # the gate stage ran out without D passing


@dataclass(frozen=True)
class Done:
    reason: str  # "plan" | "gad skipped" | "max_steps"


@dataclass(frozen=True)
class TrainStep:
    stage: str
    stage_step: int
    step: int
    kind: str  # "seqkd" | "sft" (G only) | "d" (D only) | "sft+d" | "gad"
    g_lr: float | None  # G's learning rate for this step; None: leave it
    d_from_g: bool = False  # copy G's trunk into D before the step (a from-scratch student's D starts)
    check_d: bool = False  # measure D's held-out accuracy after the step
    evaluate: bool = False  # gadx.eval.evaluate_small after the step


Action = StartGad | CheckGate | NextStage | Done | TrainStep


@dataclass(frozen=True)
class StagePlan:
    stages: tuple[Stage, ...]
    g_only: int = 0  # warmup: G-only SFT steps before D starts
    d_only: int = 0  # warmup: D-only steps after them
    d_every: int = 1  # warmup, both phase: a D update every d_every steps
    from_scratch: bool = False  # D is copied from G when it starts (else it starts from the pretrained student)
    has_d: bool = True  # False for the SeqKD run (no discriminator at all)
    eval_every: int = 0
    max_steps: int = 0
    sft_steps: int = 0  # steps that use sft_prompts (warmup's SFT, and SeqKD's matching first steps)
    sft_prompts: int = 0  # 0: prompts_per_step
    prompts_per_step: int = 1
    sft_schedule: StagesCfg | None = None  # the stages.sft_lr_* keys (config.sft_lr); None: constant base lr
    lrs: tuple[tuple[str, float], ...] = ()  # base lr of G per stage name
    gad_lr_warmup: int = 0  # GAD steps of a linear ramp to the GAD lr

    @classmethod
    def from_config(cls, cfg: TrainConfig, name: str, *, from_scratch: bool, gad_only: int = 0) -> "StagePlan":
        """The plan of run ``name`` ("seqkd" | "gad"); ``gad_only`` = N: only N GAD steps."""
        if name not in ("seqkd", "gad"):
            raise ValueError(f"a run is 'seqkd' or 'gad', got {name!r}")
        s = cfg.stages
        if gad_only:
            stages = (Stage("gad", gad_only),)
        elif name == "seqkd":
            stages = (Stage("seqkd", cfg.seqkd_steps),)
        else:
            stages = (Stage("warmup", s.warmup.steps), Stage("gate", s.gad.d_gate_steps), Stage("gad", s.gad.steps))
        w = s.warmup
        g_only = w.g_only_steps if w.g_only_steps >= 0 else (max(w.steps - 2 * w.d_only_steps, 0) if from_scratch else 0)
        return cls(stages=stages, g_only=g_only, d_only=w.d_only_steps, d_every=w.d_every, from_scratch=from_scratch,
                   has_d=name == "gad", eval_every=cfg.run.eval_every, max_steps=cfg.run.max_steps,
                   sft_steps=w.steps - (w.d_only_steps if name == "seqkd" else 0),
                   sft_prompts=s.sft_prompts_per_step, prompts_per_step=s.prompts_per_step,
                   sft_schedule=s,
                   lrs=(("seqkd", s.seqkd.lr), ("warmup", s.warmup.lr), ("gad", s.gad.lr)),
                   gad_lr_warmup=s.gad.lr_warmup)

    # ---- what to do next ----------------------------------------------------------------------

    def next_action(self, state: RunState, d_health: DHealth | None = None) -> Action:
        """The next thing to do at ``state``; ``d_health``: the gate's last verdict on D, if any."""
        if state.stage_i >= len(self.stages):
            return Done("plan")
        stage = self.stages[state.stage_i]
        if stage.name == "gate" and state.stage_step == 0:
            if not state.gad_started:
                return StartGad()  # the reference is the student as warmup left it
            if not self._measured_here(state, d_health):
                return CheckGate()
            if d_health.passes:
                return NextStage(self._next_stage(state), save=False)
        if stage.name == "gad":
            if state.gad_skipped:
                return Done("gad skipped")
            if not state.gad_started:  # a GAD-only plan
                return StartGad()
        if state.stage_step >= stage.steps:
            failed_gate = stage.name == "gate"
            nxt = self._next_stage(state)
            return NextStage(dataclasses.replace(nxt, gad_skipped=nxt.gad_skipped or failed_gate), save=True,
                             gad_skipped_now=failed_gate)
        if self.max_steps and state.step >= self.max_steps:
            return Done("max_steps")
        return self._train_step(stage, state)

    def after_start_gad(self, state: RunState) -> RunState:
        return dataclasses.replace(state, gad_started=True)

    def after_step(self, state: RunState, d_health: DHealth | None = None) -> RunState:
        """The state after a TrainStep at ``state``; a gate step whose check passed ends the gate stage."""
        done = dataclasses.replace(state, stage_step=state.stage_step + 1, step=state.step + 1)
        if self.stages[state.stage_i].name == "gate" and self._measured_here(done, d_health) and d_health.passes:
            return self._next_stage(done)
        return done

    # ---- numbers of a step --------------------------------------------------------------------

    def prompts_at(self, step: int) -> int:
        """Global prompts of a step: warmup's SFT (and SeqKD's matching steps) may use a larger batch."""
        return self.sft_prompts if self.sft_prompts and step < self.sft_steps else self.prompts_per_step

    def total_steps(self, state: RunState) -> int:
        """Steps the run will have taken when it ends, as far as known at ``state`` (a progress bar's total):
        a gate stage counts in full until it ends, GAD not at all once skipped."""
        total = state.step - state.stage_step
        for i, st in enumerate(self.stages[state.stage_i:], start=state.stage_i):
            if st.name == "gad" and state.gad_skipped:
                break
            total += st.steps
        return total

    # ---- internals ----------------------------------------------------------------------------

    @staticmethod
    def _measured_here(state: RunState, d_health: DHealth | None) -> bool:
        return d_health is not None and (d_health.stage_i, d_health.stage_step) == (state.stage_i, state.stage_step)

    @staticmethod
    def _next_stage(state: RunState) -> RunState:
        return dataclasses.replace(state, stage_i=state.stage_i + 1, stage_step=0)

    def _lr(self, stage: Stage, i: int) -> float | None:
        base = dict(self.lrs).get(stage.name)
        if base is None:
            return None
        if stage.name in ("seqkd", "warmup"):
            # the SFT schedule spans the run's first stage (as it always has: warmup or seqkd)
            return sft_lr(self.sft_schedule, base, i, self.stages[0].steps) if self.sft_schedule else base
        if stage.name == "gad" and self.gad_lr_warmup:
            # a linear ramp: Adam's first steps after a stage change are sign-like (fresh moments) or
            # scaled by the SFT stage's moments, either way unlike the steady state (RESULTS_embedded.md)
            return base * min(1.0, (i + 1) / self.gad_lr_warmup)
        return None

    def _kind(self, stage: Stage, i: int) -> str:
        if stage.name in ("seqkd", "gad"):
            return stage.name
        if stage.name == "gate":
            return "d"
        if i < self.g_only:
            return "sft"
        if i < self.g_only + self.d_only:
            return "d"
        return "sft+d" if (i - self.g_only - self.d_only) % self.d_every == 0 else "sft"

    def _train_step(self, stage: Stage, state: RunState) -> TrainStep:
        i, step = state.stage_step, state.step
        d_exists = self.has_d and not (stage.name == "warmup" and i < self.g_only)
        cadence = self.eval_every > 0 and step % self.eval_every == 0
        return TrainStep(
            stage=stage.name, stage_step=i, step=step, kind=self._kind(stage, i), g_lr=self._lr(stage, i),
            d_from_g=stage.name == "warmup" and i == self.g_only and self.from_scratch,
            check_d=d_exists and (stage.name == "gate" or cadence),
            evaluate=cadence and stage.name != "gate",
        )
