"""Shapes of common students, for planning a recipe whose model folder is not on this machine.

The numbers are the models' published config.json values (architecture only: no weights
are needed to plan memory). A recipe's ``model.student`` resolves by its last path
component, e.g. "/data/Qwen2.5-7B-Instruct" -> "Qwen2.5-7B-Instruct".
"""
from __future__ import annotations

from gadx.models import ModelConfig


def _qwen2(h, i, layers, heads, kv, vocab, tie, max_pos=32768):
    return ModelConfig(family="qwen2", vocab_size=vocab, hidden_size=h, intermediate_size=i, num_layers=layers,
                       num_heads=heads, num_kv_heads=kv, head_dim=h // heads, rope_theta=1e6, rms_norm_eps=1e-6,
                       tie_embeddings=tie, qkv_bias=True, max_position_embeddings=max_pos,
                       bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)


PRESETS: dict[str, ModelConfig] = {
    "Qwen2.5-0.5B-Instruct": _qwen2(896, 4864, 24, 14, 2, 151936, True),
    "Qwen2.5-1.5B-Instruct": _qwen2(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen2.5-3B-Instruct": _qwen2(2048, 11008, 36, 16, 2, 151936, True),
    "Qwen2.5-7B-Instruct": _qwen2(3584, 18944, 28, 28, 4, 152064, False),
    "Qwen2.5-14B-Instruct": _qwen2(5120, 13824, 48, 40, 8, 152064, False),
    "Llama-3.1-8B-Instruct": ModelConfig(
        family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32,
        num_kv_heads=8, head_dim=128, rope_theta=500000.0, rms_norm_eps=1e-5, tie_embeddings=False, qkv_bias=False,
        max_position_embeddings=131072, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
        rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
}


def preset(name: str) -> ModelConfig | None:
    key = name.rstrip("/").split("/")[-1]
    for k, v in PRESETS.items():
        if k.lower() == key.lower():
            return v
    return None
