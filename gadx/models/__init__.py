"""The model layer: megatron-core GPTModel builders for Llama 3 / Qwen2, the discriminator
head, and HF safetensors load/save. See gpt.py (API), spec.py (layer specs), hf_io.py."""
from gadx.models.config import ModelConfig
from gadx.models.fp8 import FP8Config
from gadx.models.gpt import GadxModel, build_model
from gadx.models.hf_io import from_pretrained, hf_state_dict, save_pretrained

__all__ = ["FP8Config", "GadxModel", "ModelConfig", "build_model", "from_pretrained", "hf_state_dict", "save_pretrained"]
