"""The tests' tiny models, built here and nowhere else (random weights, nothing from a hub).

    from tiny_models import hf_model, sampler_hf, parity_hf, model_config, student_config, save_student

    hf = sampler_hf("qwen2")                       # transformers model, eval mode (the sampler tests' shapes)
    hf = parity_hf("llama-gqa-tied-v517-1e4")      # larger weights (the model-parity tests' shapes)
    mc = model_config(num_layers=4)                # a gadx ModelConfig: the model-layer tests' Qwen2
    mc = student_config(tok, num_layers=2)         # the trainer tests' 1-layer Qwen2 (vocab from tok)
    save_student(folder, tok)                      # megatron-built HF folder + tokenizer (a student)
    sd = random_hf_state(mc, std=0.2)              # HF-named random tensors for the KV-cache sampler alone

Importable by name from any test module: tests/ is on sys.path through tests/conftest.py (a worker
script launched as a file imports it only inside the functions its parent calls). Each builder
seeds torch itself, so a test sees the same weights wherever it builds them.
"""
from __future__ import annotations

from pathlib import Path

import torch

HF_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)

# The sampler tests: initializer_range 0.3 rather than HF's 0.02, or the random model repeats its
# last input token forever and greedy parity would be a trivially easy test.
SAMPLER = {
    "qwen2": dict(vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1e6),
    "llama": dict(vocab_size=257, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
                  num_key_value_heads=3, tie_word_embeddings=True, rope_theta=1e4),
}

# The model-parity tests: name -> (family, vocab, heads, kv_heads, tied, rope_theta, extra rope params).
PARITY = {
    "qwen2-gqa-untied-v517-1e6": ("qwen2", 517, 4, 2, False, 1e6, {}),
    "qwen2-mha-tied-v300-1e4": ("qwen2", 300, 4, 4, True, 1e4, {}),
    "llama-gqa-tied-v517-1e4": ("llama", 517, 4, 1, True, 1e4, {}),
    "llama-mha-untied-v301-1e6": ("llama", 301, 2, 2, False, 1e6, {}),
    "llama3-scaled-rope": ("llama", 257, 4, 2, False, 5e5, {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
}


# ---- transformers models -------------------------------------------------------------------------


def hf_model(family: str, *, seed: int = 0, reinit_std: float = 0.0, **config):
    """A random transformers Qwen2 / Llama (eval mode) of HF config keys ``config`` (token ids bos 1,
    eos 2, pad 0 unless given). ``reinit_std`` > 0 redraws every weight from N(0, std) and every norm
    from 1 + N(0, std): transformers' own init (std 0.02, zero biases) makes parity checks too easy."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**HF_IDS, **config}))
    if reinit_std:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1 + reinit_std * torch.randn_like(p))
                else:
                    p.normal_(0, reinit_std)
    return model.eval()


def sampler_hf(family: str, seed: int = 0, **overrides):
    """The sampler tests' model of ``family`` (SAMPLER), with HF config ``overrides``."""
    return hf_model(family, seed=seed, **{**SAMPLER[family], "max_position_embeddings": 256,
                                          "initializer_range": 0.3, **overrides})


def parity_hf(shape: str, *, layers: int = 2, seed: int = 0):
    """The model-parity tests' model ``shape`` (a PARITY name): hidden 64, weights of std 0.1."""
    family, vocab, heads, kv, tied, theta, rope = PARITY[shape]
    return hf_model(family, seed=seed, reinit_std=0.1, vocab_size=vocab, hidden_size=64, intermediate_size=96,
                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                    tie_word_embeddings=tied, max_position_embeddings=128,
                    rope_parameters={"rope_type": "default", "rope_theta": theta, **rope})


def save_parity_hf(shape: str, folder, **kw):
    """``parity_hf(shape, **kw)`` saved as an HF folder; returns the model."""
    model = parity_hf(shape, **kw)
    model.save_pretrained(folder)
    return model


def hf_config(model):
    """The gadx ModelConfig of a transformers model."""
    from gadx.models.config import ModelConfig

    return ModelConfig.from_hf_dict(model.config.to_dict())


# ---- gadx (megatron-core) models -----------------------------------------------------------------


def model_config(**overrides):
    """The model-layer tests' shape: a 2-layer Qwen2 (vocab 97, hidden 32, 4 heads of 8, 2 KV heads, QKV
    bias), ModelConfig's defaults otherwise."""
    from gadx.models import ModelConfig

    kw = dict(family="qwen2", vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
              num_kv_heads=2, head_dim=8, qkv_bias=True)
    return ModelConfig(**{**kw, **overrides})


def student_config(tok=None, **overrides):
    """The trainer tests' student shape: a 1-layer Qwen2 (hidden 32, 2 heads, 1 KV head, tied, QKV
    bias); ``tok`` sets the vocabulary and the special token ids."""
    from gadx.models import ModelConfig

    kw = dict(family="qwen2", vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
              num_kv_heads=1, head_dim=16, rope_theta=10000.0, tie_embeddings=True, qkv_bias=True,
              max_position_embeddings=64)
    if tok is not None:
        kw.update(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return ModelConfig(**{**kw, **overrides})


def save_student(folder, tok, *, head: str = "lm", seed: int = 1, **overrides) -> Path:
    """A random ``student_config(tok, **overrides)`` model built by gadx (megatron-core), saved as an
    HF folder; a language model gets the tokenizer beside it (a discriminator does not)."""
    from gadx.models import build_model, save_pretrained

    folder = Path(folder)
    save_pretrained(build_model(student_config(tok, **overrides), head=head, seed=seed), folder)
    if head == "lm":
        tok.save(folder)
    return folder


def random_hf_state(cfg, *, std: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """HF-named tensors for every weight the KV-cache sampler reads: norms 1, the rest N(0, std)."""
    from gadx.sampler.decoder import expected_shapes

    g = torch.Generator().manual_seed(seed)
    return {k: (torch.ones(s) if len(s) == 1 else std * torch.randn(s, generator=g)) for k, s in expected_shapes(cfg).items()}
