"""gadx.train.run_steps: N GAD steps from HF folders (the entry point the distributed tests call)."""
from gadx.train.config import load_config


def test_run_steps_from_hf_folders(tmp_path, tiny_args, world_tok):
    from gadx.tokenizer import load_tokenizer
    from gadx.train import run_steps
    from tiny_models import save_student

    tok = load_tokenizer(world_tok)
    save_student(tmp_path / "student", tok, seed=1)
    save_student(tmp_path / "disc", tok, head="score", seed=2)
    cfg, _ = load_config(tiny_args(tmp_path / "out"))
    rec = []
    rows = run_steps(cfg, 2, student=tmp_path / "student", discriminator=tmp_path / "disc", recorder=rec)
    assert [r["stage"] for r in rows] == ["gad", "gad"] and rec[0] == "sample"
    assert rows[0]["kl"] == 0.0  # step 0: the reference is the starting student
    for r in rows:
        assert all(isinstance(r[k], float) for k in ("loss/g_pg", "loss/d", "reward/mean", "grad_norm/g", "grad_norm/d"))
