"""Tiny random Llama / Qwen2 checkpoints built with transformers' own classes (no hub)."""
from __future__ import annotations

import torch

SHAPES = {
    # name: (family, vocab, heads, kv_heads, tied, rope_theta, extra rope params)
    "qwen2-gqa-untied-v517-1e6": ("qwen2", 517, 4, 2, False, 1e6, {}),
    "qwen2-mha-tied-v300-1e4": ("qwen2", 300, 4, 4, True, 1e4, {}),
    "llama-gqa-tied-v517-1e4": ("llama", 517, 4, 1, True, 1e4, {}),
    "llama-mha-untied-v301-1e6": ("llama", 301, 2, 2, False, 1e6, {}),
    "llama3-scaled-rope": ("llama", 257, 4, 2, False, 5e5, {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
}


def hf_model(shape: str, *, layers: int = 2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    family, vocab, heads, kv, tied, theta, rope = SHAPES[shape]
    kw = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied,
        max_position_embeddings=128, rope_parameters={"rope_type": "default", "rope_theta": theta, **rope},
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kw))
    else:
        model = LlamaForCausalLM(LlamaConfig(**kw))
    # transformers initialises with std 0.02 and zero biases; bigger weights make parity stricter
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    return model.eval()


def save_hf(shape: str, folder, **kw):
    model = hf_model(shape, **kw)
    model.save_pretrained(folder)
    return model
