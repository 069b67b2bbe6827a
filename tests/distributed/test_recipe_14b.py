"""recipes/qwen2_5_14b_16xh100.toml is a valid trainer config for 16 GPUs with Qwen2.5-14B's shapes
(it cannot run here; `gadx plan` gives its memory)."""
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "qwen2_5_14b_16xh100.toml"


def test_recipe_is_valid_for_16_gpus():
    from gadx.plan.presets import preset
    from gadx.train.config import check_divisible, load_config

    cfg, rest = load_config(["--config", str(RECIPE)])
    assert not rest
    p, s = cfg.parallel, cfg.stages
    assert 16 % (p.tp * p.pp) == 0 and p.tp <= 8  # TP inside one 8-GPU node
    check_divisible(cfg, 16 // (p.tp * p.pp))
    assert (s.prompts_per_step, s.n_samples) == (256, 8) and s.max_response_len >= 1024
    m = preset(cfg.model.student)
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.intermediate_size, m.vocab_size) == \
        (48, 5120, 40, 8, 13824, 152064)
    m.check_parallel(p.tp)
    assert m.num_layers % p.pp == 0
    assert p.rollout != "sharded" or p.pp == 1
    assert p.micro_batch_tokens % p.tp == 0  # sequence parallelism splits each micro-batch over TP
