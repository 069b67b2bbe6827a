"""Helpers for the tiny trainer runs of these tests (imported by the test files)."""
import json
from pathlib import Path

from gadx.train.config import load_config

VOLATILE = ("time", "tokens_per_s", "rollout_tokens_per_s", "teacher/cost_usd")


def rows(path):
    """metrics.jsonl rows without wall-clock-dependent values."""
    out = [json.loads(l) for l in Path(path).read_text().splitlines()]
    return [{k: v for k, v in r.items() if not (k in VOLATILE or k.startswith("time/"))} for r in out]


def train(tmp_path, tiny_args, *extra, plan="gad", recorder=None):
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    cfg, _ = load_config(tiny_args(tmp_path, f"run.plan={plan}", *extra))
    env = Env(cfg)
    try:
        return Run(cfg, env, name=plan, out_dir=tmp_path / plan, recorder=recorder).train()
    finally:
        env.close()


def train_with_d_scores(tmp_path, tiny_args, d_scores, *extra):
    """A tiny plan=gad run whose GAD reward reads ``d_scores(batch, prompts, responses) -> (teacher_P,
    student_PN)`` (StepContext.d_scores) instead of D's scores; returns its config."""
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    cfg, _ = load_config(tiny_args(tmp_path, "run.plan=gad", *extra))
    env = Env(cfg)
    try:
        run = Run(cfg, env, name="gad", out_dir=tmp_path / "gad")
        make = run._ctx

        def ctx():
            c = make()
            c.d_scores = d_scores
            return c
        run._ctx = ctx
        run.train()
    finally:
        env.close()
    return cfg
