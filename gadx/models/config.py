"""ModelConfig: the one description of a decoder-only LM that every part of gadx shares.

Built from a Hugging Face ``config.json`` (Llama 3 and Qwen2/2.5 families) or
directly. The model layer, the sampler, the trainer and checkpoint I/O all take
this object; nothing else reads config.json.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# HF ``architectures`` / ``model_type`` values gadx can build, mapped to its family name.
_ARCHS = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2"}


@dataclass(frozen=True)
class ModelConfig:
    family: str  # "llama" | "qwen2"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False  # True for Qwen2
    max_position_embeddings: int = 4096
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # Llama 3.1 "llama3" RoPE scaling: {factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings}; None = plain RoPE.
    rope_scaling: dict[str, float] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.family not in _MODEL_TYPES.values():
            raise ValueError(f"unknown model family {self.family!r}; expected one of {sorted(set(_MODEL_TYPES.values()))}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

    @property
    def eos_ids(self) -> list[int]:
        """All end-of-sequence ids (HF allows a list)."""
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]

    def check_parallel(self, tp: int) -> None:
        """Raise ValueError when tensor-parallel size ``tp`` cannot shard this model."""
        if tp < 1:
            raise ValueError(f"tensor parallel size must be >= 1, got {tp}")
        if self.num_heads % tp or self.num_kv_heads % tp:
            raise ValueError(
                f"tensor parallel size {tp} does not divide num_heads={self.num_heads} "
                f"and num_kv_heads={self.num_kv_heads}"
            )

    # ---- HF interop -------------------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], *, source: str = "config.json") -> "ModelConfig":
        archs = d.get("architectures") or []
        family = next((_ARCHS[a] for a in archs if a in _ARCHS), None) or _MODEL_TYPES.get(d.get("model_type", ""))
        if family is None:
            raise ValueError(
                f"{source}: unsupported architecture {archs or d.get('model_type')!r}; "
                f"gadx builds {sorted(_ARCHS)}"
            )
        try:
            hidden = int(d["hidden_size"])
            heads = int(d["num_attention_heads"])
            cfg = cls(
                family=family,
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_layers=int(d["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                rope_theta=float(d.get("rope_theta") or (d.get("rope_parameters") or {}).get("rope_theta") or 10000.0),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                tie_embeddings=bool(d.get("tie_word_embeddings", False)),
                qkv_bias=family == "qwen2" or bool(d.get("attention_bias", False)),
                max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=d.get("eos_token_id"),
                pad_token_id=d.get("pad_token_id"),
            )
        except KeyError as e:
            raise ValueError(f"{source}: missing required field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None
        rope_scaling = d.get("rope_scaling") or d.get("rope_parameters")
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type")) if isinstance(rope_scaling, dict) else None
        if rope_type == "llama3":
            keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            missing = [k for k in keys if k not in rope_scaling]
            if missing:
                raise ValueError(f"{source}: llama3 rope_scaling is missing {missing}")
            cfg = cfg.replace(rope_scaling={k: float(rope_scaling[k]) for k in keys})
        elif rope_scaling and rope_type not in (None, "default"):
            raise ValueError(f"{source}: rope_scaling {rope_scaling!r} is not supported")
        return cfg

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{file}: config.json not found")
        try:
            d = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: malformed JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{file}: expected a JSON object, got {type(d).__name__}")
        return cls.from_hf_dict(d, source=str(file))

    def to_hf_dict(self) -> dict[str, Any]:
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.family]
        d = {
            "architectures": [arch],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
        }
        if self.rope_scaling is not None:
            d["rope_scaling"] = {"rope_type": "llama3", **self.rope_scaling}
        if self.family == "llama":
            d["attention_bias"] = self.qkv_bias
            d["mlp_bias"] = False
        return d

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
