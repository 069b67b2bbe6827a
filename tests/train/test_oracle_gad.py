"""GRPO with the oracle reward raises the teacher log-likelihood of the student's samples; flipped advantages lower it.

A tiny world (one family, a dozen training prompts, one teacher reply each) lets a
tiny student memorise its replies in a few dozen SFT steps, so that a fair share of
its samples at T=0.8 are replies the teacher could write and the rest are near
misses: the oracle's reward then has spread in most groups. A few GAD steps with the
oracle reward must raise the mean oracle reward (the teacher log-likelihood per token,
floored) and the share of valid samples; the same run with the advantage sign
flipped must lower them. This is the test that catches a sign error anywhere between
the reward and the policy update.
"""
import functools
import statistics

import pytest

from gadx.train.config import load_config

WORLD = {"n_train": 16, "n_test_id": 4, "n_test_ood": 0, "family_weights": {"compare": 1.0}}
ARGS = ["run.plan=gad", "run.seed=0", "run.eval_every=0", "data.held_out_size=4",
        "model.hidden_size=64", "model.intermediate_size=128", "model.num_heads=2", "model.num_kv_heads=2",
        "stages.max_response_len=32", "parallel.micro_batch_tokens=1024",
        "stages.sft_prompts_per_step=12", "stages.prompts_per_step=4", "stages.n_samples=8",
        "stages.sft_lr_schedule=constant", "stages.warmup.lr=1e-2",
        "stages.warmup.steps=STEPS_SFT", "stages.warmup.d_only_steps=0", "stages.warmup.g_only_steps=STEPS_SFT",
        "stages.gad.d_gate_steps=0", "stages.gad.d_acc_gate=0.0", "stages.gad.reward=oracle",
        "stages.gad.steps=STEPS_GAD", "stages.gad.lr=1e-3", "stages.gad.kl_coef=0.0"]
STEPS_SFT, STEPS_GAD, K = 40, 12, 4


def _run(tmp_path, tiny_args, monkeypatch, flip: bool):
    import gadx.train.step as step_mod
    import gadx.world
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    monkeypatch.setattr(gadx.world, "World", functools.partial(gadx.world.World, **WORLD))
    if flip:
        adv = step_mod.group_advantages
        monkeypatch.setattr(step_mod, "group_advantages", lambda r, **kw: -adv(r, **kw))
    args = [a.replace("STEPS_SFT", str(STEPS_SFT)).replace("STEPS_GAD", str(STEPS_GAD)) for a in ARGS]
    out = tmp_path / ("flip" if flip else "plain")
    cfg, _ = load_config(tiny_args(out, *args))
    env = Env(cfg)
    try:
        run = Run(cfg, env, name="gad", out_dir=out / "gad")
        run.train()
    finally:
        env.close()
    gad = [r for r in run.history if r["stage"] == "gad"]
    assert len(gad) == STEPS_GAD
    return gad


def _mean(rows, key):
    return statistics.mean(r[key] for r in rows)


@pytest.mark.slow
def test_oracle_reward_raises_teacher_loglik_and_a_flipped_sign_lowers_it(tmp_path, tiny_args, monkeypatch):
    monkeypatch.setenv("GADX_KERNEL_BACKEND", "torch")
    plain = _run(tmp_path, tiny_args, monkeypatch, flip=False)
    flipped = _run(tmp_path, tiny_args, monkeypatch, flip=True)
    # the same start: the first GAD step's samples and rewards agree
    assert plain[0]["reward/mean"] == pytest.approx(flipped[0]["reward/mean"], abs=1e-4)
    start = plain[0]["oracle/logT_per_token"]
    assert 0.1 <= plain[0]["oracle/valid"] <= 0.9, "the start needs both valid and invalid samples"
    msg = " ".join(f"{r['oracle/logT_per_token']:.2f}/{r['oracle/valid']:.2f}" for r in plain) + " | " + \
        " ".join(f"{r['oracle/logT_per_token']:.2f}/{r['oracle/valid']:.2f}" for r in flipped)
    print(msg)
    end_plain, end_flip = _mean(plain[-K:], "oracle/logT_per_token"), _mean(flipped[-K:], "oracle/logT_per_token")
    assert end_plain >= start + 2.0, msg
    assert _mean(plain[-K:], "oracle/valid") >= plain[0]["oracle/valid"] + 0.1, msg
    assert end_flip <= start - 2.0, msg


def test_gad_lr_warmup_ramps_the_student_lr(tmp_path, tiny_args):
    from runs import rows, train

    train(tmp_path, tiny_args, "stages.gad.steps=3", "stages.gad.lr=3e-4", "stages.gad.lr_warmup=2")
    lrs = [r["lr/g"] for r in rows(tmp_path / "gad" / "metrics.jsonl") if r["stage"] == "gad"]
    assert lrs == pytest.approx([1.5e-4, 3e-4, 3e-4])


def test_oracle_reward_needs_the_embedded_world(tmp_path):
    with pytest.raises(ValueError, match="embedded world"):
        load_config(["--set", "stages.gad.reward=oracle", "--set", "data.train=x.jsonl", "--set", "model.tokenizer=t"])
    with pytest.raises(ValueError, match="adv_norm"):
        load_config(["--set", "stages.gad.adv_norm=rank"])


def test_oracle_arm_recipe_loads():
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "oracle_arm.toml"
    cfg, _ = load_config(["--config", str(recipe)])
    assert cfg.stages.gad.reward == "oracle" and cfg.stages.n_samples == 8 and cfg.stages.gad.lr == 5e-4
