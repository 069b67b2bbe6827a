"""FP8 training through Transformer Engine, set on megatron's TransformerConfig.

    model = build_model(cfg, dtype=torch.bfloat16, use_te=True, fp8="tensorwise")
    model = build_model(cfg, dtype=torch.bfloat16, use_te=True, fp8=FP8Config("delayed", margin=0))

Recipes are megatron-core's names for Transformer Engine's (``megatron.core.enums.Fp8Recipe``):
- ``tensorwise``: per-tensor *current* scaling (TE ``Float8CurrentScaling``, TE >= 2.2); the
  default for H100 / H200: no amax history to warm up, robust to RL's shifting activations.
- ``delayed``: per-tensor delayed scaling from an amax history (TE ``DelayedScaling``).
- ``mxfp8``: MX block scaling (Blackwell only).
- ``blockwise``: 1x128 / 128x128 block scaling (TE >= 2.3, Hopper).
Format ``hybrid`` = E4M3 forward, E5M2 gradients; ``e4m3`` everywhere.

megatron applies FP8 inside its TransformerBlock (TE's autocast around each layer) only with
the TE layer spec: with the local spec ``fp8`` is silently ignored and the model trains in
bf16. ``resolve_fp8`` therefore refuses FP8 without ``use_te=True``, and without an importable
transformer_engine, before anything is built. Only the GEMMs of the decoder layers run in
FP8 (the embedding, LM head, norms, attention core and the fused loss kernels stay bf16/fp32);
TE needs the GEMM dimensions (hidden, ffn, heads*head_dim) to be multiples of 16.
"""
from __future__ import annotations

from dataclasses import dataclass

RECIPES = ("tensorwise", "delayed", "mxfp8", "blockwise")
FORMATS = ("hybrid", "e4m3")


@dataclass(frozen=True)
class FP8Config:
    recipe: str = "tensorwise"
    format: str = "hybrid"
    margin: int = 0
    amax_history_len: int = 1024  # delayed scaling only
    amax_compute_algo: str = "max"  # delayed scaling only: "max" | "most_recent"

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"fp8 recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.format not in FORMATS:
            raise ValueError(f"fp8 format must be one of {FORMATS}, got {self.format!r}")
        if self.amax_compute_algo not in ("max", "most_recent"):
            raise ValueError(f"fp8 amax_compute_algo must be 'max' or 'most_recent', got {self.amax_compute_algo!r}")
        if self.margin < 0 or self.amax_history_len < 1:
            raise ValueError(f"fp8 margin must be >= 0 and amax_history_len >= 1, got {self.margin}, {self.amax_history_len}")


def resolve_fp8(fp8, *, use_te: bool) -> FP8Config | None:
    """None / "" / "off" -> None; a recipe name or FP8Config -> FP8Config, after checking that
    FP8 can really be applied (TE spec, TE importable, GEMM dims multiple of 16)."""
    from gadx.models.spec import te_available

    if fp8 is None or fp8 in ("", "off", "none"):
        return None
    cfg = fp8 if isinstance(fp8, FP8Config) else FP8Config(recipe=fp8) if isinstance(fp8, str) else None
    if cfg is None:
        raise ValueError(f"fp8 must be None, a recipe name {RECIPES} or an FP8Config, got {fp8!r}")
    if not use_te:
        raise ValueError(
            f"fp8={cfg.recipe!r} needs the Transformer Engine layer spec (use_te=True): megatron's local "
            "spec silently ignores fp8 and would train in bf16"
        )
    if not te_available():
        raise ValueError(
            f"fp8={cfg.recipe!r} needs transformer_engine, which is not importable: install it "
            "(pip install 'gadx[gpu]') or turn fp8 off; gadx never falls back to bf16 silently"
        )
    return cfg


def check_fp8_shapes(model_cfg, tp: int) -> None:
    dims = {
        "hidden_size": model_cfg.hidden_size,
        "intermediate_size / tp": model_cfg.intermediate_size // tp,
        "num_heads * head_dim / tp": model_cfg.num_heads * model_cfg.head_dim // tp,
    }
    bad = {k: v for k, v in dims.items() if v % 16}
    if bad:
        raise ValueError(f"fp8 GEMMs need dimensions divisible by 16, got {bad}")


def transformer_config_kwargs(fp8: FP8Config | None) -> dict:
    """The TransformerConfig fields for ``fp8`` ({} when off)."""
    if fp8 is None:
        return {}
    return dict(
        fp8=fp8.format,
        fp8_recipe=fp8.recipe,
        fp8_margin=fp8.margin,
        fp8_amax_history_len=fp8.amax_history_len,
        fp8_amax_compute_algo=fp8.amax_compute_algo,
    )
