import pytest
import torch

from gadx.train.config import load_config


def test_unreachable_teacher_is_one_line_error(tmp_path, tiny_args):
    from gadx.train.env import Env

    cfg, _ = load_config(tiny_args(tmp_path, "teacher.base_url=http://127.0.0.1:9/v1"))
    with pytest.raises(ValueError, match="teacher at http://127.0.0.1:9/v1 is unreachable") as e:
        Env(cfg)
    assert "\n" not in str(e.value)


def test_cli_reports_config_errors_in_one_line(capsys):
    from gadx.train import main

    assert main(["--set", "stages.gad.stepz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gadx train: unknown config key 'stages.gad.stepz'") and "\n" not in err


def test_fp8_without_transformer_engine_is_one_line_error(tmp_path, tiny_args):
    """The trainer passes model.use_te / model.fp8 to the model builder: never a silent bf16 run."""
    from gadx.models.spec import te_available
    from gadx.train.env import Env

    if te_available():
        pytest.skip("transformer_engine is installed here")
    cfg, _ = load_config(tiny_args(tmp_path, "model.use_te=true", "model.fp8=tensorwise"))
    env = Env(cfg)
    try:
        with pytest.raises(ValueError, match="transformer_engine") as e:
            env.build()
        assert "\n" not in str(e.value)
    finally:
        env.close()


def test_bfloat16_run_trains_with_finite_losses(tmp_path, tiny_args):
    """model.dtype=bfloat16: bf16 weights (megatron keeps its torch-norm weights in fp32),
    a bf16 sampler, and warmup + GAD steps with finite losses, none skipped."""
    import json

    from gadx.train.run import train_all
    from gadx.train.env import Env

    cfg, _ = load_config(tiny_args(tmp_path, "model.dtype=bfloat16", "run.plan=gad"))
    env = Env(cfg)
    try:
        model = env.build()
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert all(d == torch.bfloat16 for n, d in dtypes.items() if "layernorm" not in n), dtypes
        assert env.engine.dtype == torch.bfloat16
    finally:
        env.close()
    assert train_all(cfg) == 0
    rows = [json.loads(l) for l in (tmp_path / "gad" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["warmup"] * 3 + ["gad"] * 2
    for r in rows:
        assert r["nonfinite_total"] == 0
        for k in ("loss/g_ce", "loss/d", "loss/g"):
            if k in r:
                assert isinstance(r[k], float) and abs(r[k]) < 1e4, (k, r[k])


def test_env_flushes_denormals_on_cpu(tmp_path, tiny_args):
    """A saturated Bradley-Terry loss leaves denormal gradients and Adam moments; CPU arithmetic on them
    made one SmolLM2 implicit-D update 6x slower (docs/real_llm.md), so the trainer flushes them to zero."""
    from gadx.train.env import Env

    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's smallest normal (1.18e-38)
    assert float(tiny * 1.0) != 0.0
    env = Env(load_config(tiny_args(tmp_path))[0])
    try:
        assert float(tiny * 1.0) == 0.0
    finally:
        env.close()
        torch.set_flush_denormal(False)
