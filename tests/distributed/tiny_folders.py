"""The tiny student / discriminator HF folders of the distributed trainer tests (the shapes of
test_layout_steps: 2 layers for PP=2, 4 heads / 2 KV heads for TP=2), built in this process."""
from pathlib import Path


def make_folders(root: Path) -> Path:
    from gadx.models import ModelConfig, build_model, save_pretrained
    from gadx.parallel import destroy_parallel, init_parallel
    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    tok = train_sentencepiece(World(seed=0).corpus(), root / "tok", 400, chat_template="llama3")
    mc = ModelConfig(family="qwen2", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=10000.0, tie_embeddings=True, qkv_bias=True,
                     max_position_embeddings=64, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
                     pad_token_id=tok.pad_id)
    init_parallel(1, 1)
    save_pretrained(build_model(mc, seed=1), root / "student")
    tok.save(root / "student")
    save_pretrained(build_model(mc, head="score", seed=2), root / "disc")
    destroy_parallel(keep_process_group=True)
    return root
