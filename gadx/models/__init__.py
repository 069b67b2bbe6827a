"""The model layer: megatron-core GPTModel builders for Llama 3 / Qwen2, the discriminator
head, and HF safetensors load/save. See gpt.py (API), spec.py (layer specs), hf_io.py.

`ModelConfig` and `FP8Config` import at once; the rest loads on first use (PEP 562), so
code that needs only the config (the KV-cache sampler behind `gadx serve --model` and
`gadx eval --model`) never imports megatron-core (~5 s and its import warnings)."""
from gadx.models.config import ModelConfig
from gadx.models.fp8 import FP8Config

_LAZY = {"GadxModel": "gadx.models.gpt", "build_model": "gadx.models.gpt", "from_pretrained": "gadx.models.hf_io",
         "hf_state_dict": "gadx.models.hf_io", "save_pretrained": "gadx.models.hf_io"}

__all__ = ["FP8Config", "GadxModel", "ModelConfig", "build_model", "from_pretrained", "hf_state_dict", "save_pretrained"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gadx.models' has no attribute {name!r}")
