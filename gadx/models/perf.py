"""Memory and throughput levers of the megatron model: activation recompute, sequence
parallelism, and megatron's fused kernels, as one frozen config mapped onto TransformerConfig.

    perf = PerfConfig(recompute="selective", sequence_parallel=True)
    model = build_model(cfg, parallel=dims, perf=perf)

- ``recompute``: "none"; "selective" (megatron's ``core_attn``: the attention core is re-run in
  backward instead of keeping its inputs' products, e.g. the [heads, T, T] scores of the math
  SDPA kernel); "full" (whole decoder layers re-run in backward: only each checkpointed chunk's
  input [T, B, H] is kept). ``recompute_method`` / ``recompute_num_layers`` are megatron's:
  "uniform" checkpoints chunks of ``recompute_num_layers`` layers each (1 = every layer on its
  own, the least memory), "block" checkpoints the first ``recompute_num_layers`` layers of each
  pipeline stage and keeps the rest.
- ``sequence_parallel``: megatron's flag; with TP > 1 the activations between the TP regions
  (norms, residual adds, dropout) are split along the sequence over the TP ranks instead of
  replicated. A no-op at TP=1. gadx's side of it (the norms of the local spec, the final
  gather, token padding) is in gpt.py / sp.py.
- ``fusions``: "auto" (each fused kernel on where it can run: a GPU, plus TE or Apex for the
  ones that need them; all off on CPU), "off", or "on" (like auto, but a ValueError names any
  fusion whose kernel is not available instead of leaving it off).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

RECOMPUTE = ("none", "selective", "full")
RECOMPUTE_METHODS = ("uniform", "block")
SWITCHES = ("auto", "on", "off")


@dataclass(frozen=True)
class PerfConfig:
    recompute: str = "none"
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    sequence_parallel: bool = False
    fusions: str = "auto"
    # megatron DDP's overlap_grad_reduce (gradient reduce-scatter per bucket while backward runs);
    # read by gadx.parallel.wrap_ddp. "auto": on with CUDA (NCCL), off on CPU (gloo)
    overlap_grad_reduce: str = "auto"

    def __post_init__(self) -> None:
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.recompute_method not in RECOMPUTE_METHODS:
            raise ValueError(f"recompute_method must be one of {RECOMPUTE_METHODS}, got {self.recompute_method!r}")
        if not isinstance(self.recompute_num_layers, int) or self.recompute_num_layers < 1:
            raise ValueError(f"recompute_num_layers must be an int >= 1, got {self.recompute_num_layers!r}")
        for name in ("fusions", "overlap_grad_reduce"):
            if getattr(self, name) not in SWITCHES:
                raise ValueError(f"{name} must be one of {SWITCHES}, got {getattr(self, name)!r}")

    def overlap_grad_reduce_on(self) -> bool:
        return switch_on(self.overlap_grad_reduce, cuda=torch.cuda.is_available())


@dataclass(frozen=True)
class Kernels:
    """What this process can run, read once at build time (never imports the packages)."""
    cuda: bool
    te: bool
    apex_wgrad: bool  # Apex's fused_weight_gradient_mlp_cuda (gradient-accumulation fusion, local spec)

    @classmethod
    def detect(cls) -> "Kernels":
        def has(name: str) -> bool:
            return importlib.util.find_spec(name) is not None

        return cls(cuda=torch.cuda.is_available(), te=has("transformer_engine"),
                   apex_wgrad=has("fused_weight_gradient_mlp_cuda"))


def switch_on(mode: str, *, cuda: bool) -> bool:
    """An "auto" | "on" | "off" switch whose auto means: on with CUDA."""
    return mode == "on" or (mode == "auto" and cuda)


def fusion_plan(mode: str, *, use_te: bool, kernels: Kernels) -> dict[str, bool]:
    """TransformerConfig fusion flags for ``mode``, from what ``kernels`` says can run.

    - bias_activation_fusion / bias_dropout_fusion: megatron's own fused SwiGLU and
      bias-dropout-add (torch jit / compile, no extra package); on with a GPU only, so the CPU
      path keeps the plain ops the golden tests were recorded with.
    - masked_softmax_fusion: on with a GPU; it configures megatron's DotProductAttention,
      which gadx replaces with SDPAttention (SDPA / flash-attn fuse the softmax themselves),
      so it changes nothing today.
    - apply_rope_fusion: TE's fused RoPE kernel; needs TE and a GPU.
    - gradient_accumulation_fusion is not a build flag here: it writes weight gradients
      straight into DDP's fp32 ``main_grad``, which a bare (un-wrapped) model does not have,
      so ``gadx.parallel.wrap_ddp`` turns it on for the models it wraps (``grad_accum_fusion``).
    """
    want = {
        "bias_activation_fusion": kernels.cuda,
        "bias_dropout_fusion": kernels.cuda,
        "masked_softmax_fusion": kernels.cuda,
        "apply_rope_fusion": kernels.cuda and kernels.te,
    }
    if mode == "off":
        return dict.fromkeys(want, False)
    if mode == "on":
        missing = [k for k, ok in want.items() if not ok]
        if not grad_accum_fusion_available(use_te=use_te, kernels=kernels):
            missing.append("gradient_accumulation_fusion")
        if missing:
            raise ValueError(f"fusions='on' but {missing} cannot run here (cuda={kernels.cuda}, "
                             f"transformer_engine={kernels.te}): use fusions='auto' to skip them")
    return want


def grad_accum_fusion_available(*, use_te: bool, kernels: Kernels) -> bool:
    """Gradient-accumulation fusion for the local spec's linears: a GPU and Apex's
    fused_weight_gradient_mlp_cuda. (TE linears take the flag at construction and are
    left as built: not verified without TE on a GPU.)"""
    return kernels.cuda and kernels.apex_wgrad and not use_te


def recompute_kwargs(perf: PerfConfig, layers_per_stage: int) -> dict:
    """TransformerConfig's recompute_* arguments."""
    if perf.recompute == "none":
        return {}
    if perf.recompute == "selective":
        return {"recompute_granularity": "selective", "recompute_modules": ["core_attn"]}
    if perf.recompute_method == "block" and perf.recompute_num_layers > layers_per_stage:
        raise ValueError(f"recompute_num_layers={perf.recompute_num_layers} exceeds the {layers_per_stage} "
                         f"layers of a pipeline stage (recompute_method='block')")
    if perf.recompute_method == "uniform" and layers_per_stage % perf.recompute_num_layers:
        raise ValueError(f"recompute_num_layers={perf.recompute_num_layers} does not divide the {layers_per_stage} "
                         f"layers of a pipeline stage (recompute_method='uniform' checkpoints chunks of that many)")
    return {"recompute_granularity": "full", "recompute_method": perf.recompute_method,
            "recompute_num_layers": perf.recompute_num_layers}


def token_multiple(*, tp: int, sequence_parallel: bool, fp8: bool) -> int:
    """Micro-batch token counts must be a multiple of this: TP under sequence parallelism (the
    sequence is split over the TP ranks), 16 per rank under FP8 (FP8 GEMM shapes)."""
    m = tp if sequence_parallel and tp > 1 else 1
    return m * 16 if fp8 else m


def enable_grad_accum_fusion(model, kernels: Kernels | None = None) -> int:
    """Turn on megatron's gradient-accumulation fusion (weight grads accumulated into the fp32
    ``main_grad`` by Apex's fused kernel, no separate bf16 grad + add) on the local spec's TP
    linears of a model that DDP is about to wrap, when ``model.perf.fusions`` allows it and the
    kernel exists. Returns how many linears were switched (0 on CPU)."""
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    # (under the TE spec the decoder's linears are TE modules, built with the flag off; only the
    # unused output layer would match below)
    kernels = kernels or Kernels.detect()
    if model.perf.fusions == "off" or not grad_accum_fusion_available(use_te=False, kernels=kernels):
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, (ColumnParallelLinear, RowParallelLinear)):
            m.gradient_accumulation_fusion = True
            n += 1
    return n
