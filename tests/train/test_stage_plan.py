"""The stage plan (gadx/train/stages.py) on its own: every transition, without a model."""
import dataclasses

import pytest

from gadx.train.config import TrainConfig, sft_lr
from gadx.train.stages import (CheckGate, DHealth, Done, NextStage, RunState, Stage, StagePlan, StartGad,
                               TrainStep)


def plan(warmup=3, gate=2, gad=2, **kw) -> StagePlan:
    return StagePlan(stages=(Stage("warmup", warmup), Stage("gate", gate), Stage("gad", gad)), **kw)


def drive(p: StagePlan, verdicts=(), state=RunState()):
    """Carry out the plan to its end as the trainer does; ``verdicts``: the gate's answers in turn.
    Returns the trace: StartGad -> "start", CheckGate -> "check", NextStage -> ("next", save, skipped),
    TrainStep -> its kind, and Done's reason last."""
    answers, trace, health = iter(verdicts), [], None
    while not isinstance(a := p.next_action(state, health), Done):
        if isinstance(a, StartGad):
            trace.append("start")
            state = p.after_start_gad(state)
        elif isinstance(a, CheckGate):
            trace.append("check")
            health = DHealth(state.stage_i, state.stage_step, next(answers))
        elif isinstance(a, NextStage):
            trace.append(("next", a.save, a.gad_skipped_now))
            state = a.state
        else:
            assert isinstance(a, TrainStep) and (a.stage_step, a.step) == (state.stage_step, state.step)
            trace.append(a.kind)
            if a.stage == "gate":
                assert a.check_d  # every gate step measures D
                health = DHealth(state.stage_i, state.stage_step + 1, next(answers))
            state = p.after_step(state, health)
    trace.append(a.reason)
    return trace, state


def test_gate_open_at_once_goes_straight_to_gad_without_a_save():
    trace, state = drive(plan(), verdicts=[True])
    assert trace == ["sft+d"] * 3 + [("next", True, False), "start", "check", ("next", False, False),
                                     "gad", "gad", ("next", True, False), "plan"]
    assert state.step == 5 and not state.gad_skipped


def test_gate_opens_after_d_only_steps():
    trace, state = drive(plan(gate=3), verdicts=[False, False, True])
    assert trace == ["sft+d"] * 3 + [("next", True, False), "start", "check", "d", "d",
                                     "gad", "gad", ("next", True, False), "plan"]
    assert state.step == 7


def test_gate_that_never_opens_skips_gad():
    trace, state = drive(plan(gate=2), verdicts=[False] * 3)
    assert trace == ["sft+d"] * 3 + [("next", True, False), "start", "check", "d", "d",
                                     ("next", True, True), "gad skipped"]
    assert state.gad_skipped and state.step == 5


def test_gate_without_steps_decides_on_the_first_check():
    trace, _ = drive(plan(gate=0), verdicts=[False])
    assert trace[-4:] == ["start", "check", ("next", True, True), "gad skipped"]
    trace, _ = drive(plan(gate=0), verdicts=[True])
    assert trace[-6:] == ["check", ("next", False, False), "gad", "gad", ("next", True, False), "plan"]


def test_warmup_phases_and_d_every():
    """g_only=2, d_only=1, d_every=3 (as tests/train/test_stages.py runs it): G, G | D | D+G, G, G, D+G, G."""
    p = plan(warmup=8, gad=0, g_only=2, d_only=1, d_every=3)
    trace, _ = drive(p, verdicts=[True])
    assert trace[:8] == ["sft", "sft", "d", "sft+d", "sft", "sft", "sft+d", "sft"]


@pytest.mark.parametrize("from_scratch", [True, False])
def test_d_copied_from_g_when_it_starts_only_from_scratch(from_scratch):
    p = plan(warmup=5, g_only=2, d_only=1, from_scratch=from_scratch)
    steps = [p.next_action(RunState(stage_step=i, step=i)) for i in range(5)]
    assert [a.d_from_g for a in steps] == [False, False, from_scratch, False, False]


def test_d_health_cadence_and_evaluation():
    p = plan(warmup=4, gate=2, gad=4, g_only=2, eval_every=2)
    warm = [p.next_action(RunState(stage_step=i, step=i)) for i in range(4)]
    assert [a.check_d for a in warm] == [False, False, True, False]  # no D during the G-only steps
    assert [a.evaluate for a in warm] == [True, False, True, False]
    gate = p.next_action(RunState(stage_i=1, stage_step=1, step=5, gad_started=True))
    assert gate.check_d and not gate.evaluate  # every gate step checks D; no evaluation in the gate
    gad = [p.next_action(RunState(stage_i=2, stage_step=i, step=5 + i, gad_started=True)) for i in range(4)]
    assert [a.check_d for a in gad] == [False, True, False, True]
    seqkd = StagePlan(stages=(Stage("seqkd", 4),), has_d=False, eval_every=2)
    assert [(a.check_d, a.evaluate) for a in (seqkd.next_action(RunState(stage_step=i, step=i)) for i in range(2))] \
        == [(False, True), (False, False)]


def test_resume_into_each_stage():
    p = plan()
    # saved when warmup ended (no reference yet): freeze it, then the gate's first check
    assert isinstance(p.next_action(RunState(stage_i=1, step=3)), StartGad)
    assert isinstance(p.next_action(RunState(stage_i=1, step=3, gad_started=True)), CheckGate)
    # an earlier check (another position) does not count as this one
    assert isinstance(p.next_action(RunState(stage_i=1, step=3, gad_started=True), DHealth(0, 3, True)), CheckGate)
    # saved mid-gate: the next D-only step, no new check first
    a = p.next_action(RunState(stage_i=1, stage_step=1, step=4, gad_started=True))
    assert isinstance(a, TrainStep) and a.kind == "d"
    # saved after a failed gate: nothing left
    assert p.next_action(RunState(stage_i=2, step=5, gad_skipped=True, gad_started=True)) == Done("gad skipped")
    assert p.next_action(RunState(stage_i=3, step=7, gad_started=True)) == Done("plan")


def test_gad_only_plan_freezes_the_reference_first():
    p = StagePlan(stages=(Stage("gad", 2),))
    trace, state = drive(p)
    assert trace == ["start", "gad", "gad", ("next", True, False), "plan"]


def test_max_steps_stops_before_the_step():
    trace, state = drive(plan(max_steps=2))
    assert trace == ["sft+d", "sft+d", "max_steps"] and state.step == 2


def test_from_config_matches_the_config():
    cfg = TrainConfig()
    s = cfg.stages
    s.warmup.steps, s.warmup.d_only_steps, s.warmup.g_only_steps = 10, 2, -1
    s.sft_prompts_per_step, s.prompts_per_step = 16, 4
    s.gad.lr_warmup = 4
    p = StagePlan.from_config(cfg, "gad", from_scratch=True)
    assert [st.name for st in p.stages] == ["warmup", "gate", "gad"]
    assert p.g_only == 10 - 2 * 2  # from scratch: G learns to talk first
    assert StagePlan.from_config(cfg, "gad", from_scratch=False).g_only == 0
    assert [p.prompts_at(i) for i in (0, 9, 10)] == [16, 16, 4]
    seqkd = StagePlan.from_config(cfg, "seqkd", from_scratch=True)
    assert seqkd.stages == (Stage("seqkd", cfg.seqkd_steps),) and not seqkd.has_d
    assert [seqkd.prompts_at(i) for i in (7, 8)] == [16, 4]  # SeqKD's SFT-batch steps end d_only earlier
    warm = [p.next_action(RunState(stage_step=i, step=i)).g_lr for i in range(10)]
    assert warm == [sft_lr(s, s.warmup.lr, i, 10) for i in range(10)]
    warm = [p.next_action(RunState(stage_step=i, step=i)).g_lr for i in range(10)]
    assert warm == [sft_lr(s, s.warmup.lr, i, 10) for i in range(10)]
    gad = [p.next_action(RunState(stage_i=2, stage_step=i, step=20 + i, gad_started=True)).g_lr for i in range(6)]
    assert gad == pytest.approx([s.gad.lr * f for f in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)])
    assert p.next_action(RunState(stage_i=1, stage_step=1, gad_started=True)).g_lr is None  # the gate keeps G's lr
    s.gad.lr_warmup = 0
    assert StagePlan.from_config(cfg, "gad", from_scratch=True).next_action(
        RunState(stage_i=2, gad_started=True)).g_lr is None  # constant: set once when GAD starts
    only = StagePlan.from_config(cfg, "gad", from_scratch=True, gad_only=3)
    assert only.stages == (Stage("gad", 3),)
    with pytest.raises(ValueError, match="'sft'"):
        StagePlan.from_config(cfg, "sft", from_scratch=True)


def test_total_steps_shrinks_as_the_gate_decides():
    p = plan(warmup=3, gate=5, gad=2)
    assert p.total_steps(RunState()) == 10
    assert p.total_steps(RunState(stage_i=2, step=4, gad_started=True)) == 6  # gate left after one step
    assert p.total_steps(RunState(stage_i=2, step=8, gad_skipped=True)) == 8
    assert p.total_steps(dataclasses.replace(RunState(), stage_i=3, step=9)) == 9
