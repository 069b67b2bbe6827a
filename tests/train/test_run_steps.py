"""gadx.train.run_steps: N GAD steps from HF folders (the entry point the distributed tests call)."""
from gadx.train.config import load_config


def test_run_steps_from_hf_folders(tmp_path, tiny_args, world_tok):
    from gadx.models import ModelConfig, build_model, save_pretrained
    from gadx.tokenizer import load_tokenizer
    from gadx.train import run_steps

    tok = load_tokenizer(world_tok)
    mc = ModelConfig(family="qwen2", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1,
                     num_heads=2, num_kv_heads=1, head_dim=16, rope_theta=10000.0, tie_embeddings=True, qkv_bias=True,
                     max_position_embeddings=64, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    save_pretrained(build_model(mc, seed=1), tmp_path / "student")
    tok.save(tmp_path / "student")
    save_pretrained(build_model(mc, head="score", seed=2), tmp_path / "disc")
    cfg, _ = load_config(tiny_args(tmp_path / "out"))
    rec = []
    rows = run_steps(cfg, 2, student=tmp_path / "student", discriminator=tmp_path / "disc", recorder=rec)
    assert [r["stage"] for r in rows] == ["gad", "gad"] and rec[0] == "sample"
    assert rows[0]["kl"] == 0.0  # step 0: the reference is the starting student
    for r in rows:
        assert all(isinstance(r[k], float) for k in ("loss/g_pg", "loss/d", "reward/mean", "grad_norm/g", "grad_norm/d"))
