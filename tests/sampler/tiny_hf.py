"""Tiny random HF checkpoints for the sampler tests and benchmark (built locally, nothing from a hub)."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from gadx.models.config import ModelConfig

# initializer_range 0.3 rather than HF's 0.02: with tiny std the random model repeats its last
# input token forever, and greedy parity would be a trivially easy test.
SPECS = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1e6)),
    "llama": (LlamaConfig, LlamaForCausalLM, dict(
        vocab_size=257, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=3, tie_word_embeddings=True, rope_theta=1e4)),
}


def build_hf(family: str, seed: int = 0):
    config_cls, model_cls, kw = SPECS[family]
    torch.manual_seed(seed)
    config = config_cls(**kw, max_position_embeddings=256, initializer_range=0.3, bos_token_id=1, eos_token_id=2,
                        pad_token_id=0)
    return model_cls(config).eval()


def model_config(hf_model) -> ModelConfig:
    return ModelConfig.from_hf_dict(hf_model.config.to_dict())
