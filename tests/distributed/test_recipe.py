"""recipes/qwen2_5_7b_8xh100.toml is a valid trainer config for 8 GPUs (it cannot run here)."""
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "qwen2_5_7b_8xh100.toml"


def test_recipe_is_valid_for_8_gpus():
    from gadx.train.config import check_divisible, load_config

    cfg, rest = load_config(["--config", str(RECIPE)])
    assert not rest
    p, s = cfg.parallel, cfg.stages
    assert 8 % (p.tp * p.pp) == 0
    dp = 8 // (p.tp * p.pp)
    check_divisible(cfg, dp)
    assert (s.prompts_per_step, s.n_samples) == (256, 8)
    # Qwen2.5-7B: 28 heads, 4 KV heads, 28 layers must split over TP / PP
    assert 28 % p.tp == 0 and 4 % p.tp == 0 and 28 % p.pp == 0
