"""The sampler's KV cache is sized by the rollout call; the held-out check runs in chunks of it with
the same samples as one big call; the sampler holds nothing between phases."""
from gadx.train.config import load_config

CEILING = ("stages.gad.gate=ceiling", "stages.gad.gate_samples=3", "stages.gad.gate_min_pairs=12",
           "stages.max_response_len=24", "parallel.micro_batch_tokens=512", "data.held_out_size=8")


def _train(tmp_path, tiny_args, *extra):
    from runs import rows

    from gadx.train.env import Env
    from gadx.train.trainer import Run

    cfg, _ = load_config(tiny_args(tmp_path, "run.plan=gad", *extra))
    env = Env(cfg)
    try:
        Run(cfg, env, name="gad", out_dir=tmp_path / "gad").train()
        return env.engine, rows(tmp_path / "gad" / "metrics.jsonl")
    finally:
        env.close()


def test_heldout_check_in_chunks_equals_one_call(tmp_path, tiny_args, monkeypatch):
    import gadx.train.env as env_module

    engine, chunked = _train(tmp_path / "a", tiny_args, *CEILING)
    assert engine.max_batch == 2 * 2  # rollout_prompts_per_call x n_samples, not 8 held-out prompts x 3
    assert engine.decoder.cache is None and engine.decoder.weights is None  # released after the last phase
    monkeypatch.setattr(env_module, "rollout_batch", lambda stages, dp: 8 * 3)  # the old sizing: one call
    engine, whole = _train(tmp_path / "b", tiny_args, *CEILING)
    assert engine.max_batch == 24
    held = [r for r in chunked if "d_acc/heldout" in r]
    assert held and all(r["d_acc/heldout_n_pairs"] == 8 * 3 for r in held)
    assert chunked == whole
