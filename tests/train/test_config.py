import json

import pytest

from gadx.train.config import TrainConfig, from_dict, load_config


def test_defaults_validate_and_round_trip():
    cfg, rest = load_config([])
    assert rest == []
    assert cfg.stages.temperature == 0.8 and cfg.stages.gad.clip_low == 0.2 and cfg.stages.gad.kl_coef == 0.001
    assert from_dict(json.loads(cfg.to_json())) == cfg


def test_file_then_set_overrides(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('[stages.gad]\nsteps = 7\nlr = 1e-6\n[run]\nseed = 3\nout_dir = "x"\n')
    cfg, _ = load_config(["--config", str(f), "--set", "stages.gad.steps=9", "--set=run.tensorboard=false"])
    assert cfg.stages.gad.steps == 9 and cfg.stages.gad.lr == 1e-6 and cfg.run.seed == 3
    assert cfg.run.tensorboard is False and cfg.run.out_dir == "x"


def test_seqkd_budget_matches_gad_student_updates():
    cfg, _ = load_config(["--set", "stages.warmup.steps=10", "--set", "stages.warmup.d_only_steps=3", "--set", "stages.gad.steps=5"])
    assert cfg.seqkd_steps == 7 + 5


@pytest.mark.parametrize(
    "args, match",
    [
        (["--set", "stages.gad.stepz=3"], "unknown config key 'stages.gad.stepz'"),
        (["--set", "nope.x=1"], "unknown config key 'nope.x'"),
        (["--set", "stages.gad=1"], "is a section"),
        (["--set", "stages.gad.steps=abc"], "expected int"),
        (["--set", "stages.gad.steps"], "key.sub=value"),
        (["--set", "teacher.base_url="], "teacher.base_url is empty"),
        (["--set", "parallel.micro_batch_tokens=10"], "cannot hold one sequence"),
        # defaults: 8 samples + the teacher reply, each up to 48 + 48 tokens
        (["--set", "parallel.micro_batch_tokens=863"], r"cannot hold a discriminator group of .* = 864 tokens"),
        (["--set", "run.plan=foo"], "run.plan"),
        (["--config", "/nonexistent.toml"], "not found"),
        (["--set", "model.dtype=float16"], "model.dtype must be one of"),
        (["--set", "stages.sft_prompts_per_step=20"], "must be a multiple of"),
        (["--set", "model.fp8=tensorwise"], "needs model.use_te=true"),
    ],
)
def test_bad_configs_give_one_line_errors(args, match):
    with pytest.raises(ValueError, match=match) as e:
        load_config(args)
    assert "\n" not in str(e.value)


def test_seqkd_needs_no_room_for_discriminator_groups():
    load_config(["--set", "run.plan=seqkd", "--set", "parallel.micro_batch_tokens=96"])


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text("[run]\nseeed = 1\n")
    with pytest.raises(ValueError, match="unknown config key 'run.seeed'"):
        load_config(["--config", str(f)])


def test_tp_not_dividing_heads_is_one_line_error():
    with pytest.raises(ValueError, match=r"parallel.tp=3 does not divide model.num_heads=4") as e:
        load_config(["--set", "parallel.tp=3"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("sets, dp, match", [
    (["stages.prompts_per_step=6", "stages.sft_prompts_per_step=0"], 4, "prompts_per_step=6 is not divisible by the data-parallel size 4"),
    (["stages.prompts_per_step=8", "stages.rollout_prompts_per_call=3"], 2, "rollout_prompts_per_call=3 does not divide"),
])
def test_batch_not_divisible_is_one_line_error(sets, dp, match):
    from gadx.train.config import check_divisible

    cfg, _ = load_config([a for s in sets for a in ("--set", s)])
    with pytest.raises(ValueError, match=match) as e:
        check_divisible(cfg, dp)
    assert "\n" not in str(e.value)


def test_sft_lr_schedule_warms_up_then_decays_to_min():
    from gadx.train.config import StagesCfg, sft_lr

    s = StagesCfg(sft_lr_warmup=4, sft_lr_min_ratio=0.1)
    lrs = [sft_lr(s, 1.0, k, 24) for k in range(24)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone decay after warmup
    assert abs(lrs[-1] - 0.1) < 1e-12 and abs(lrs[13] - 0.55) < 0.05
    assert sft_lr(StagesCfg(sft_lr_schedule="constant"), 0.3, 5, 10) == 0.3
