"""Backend choice for the fused kernels: "triton" or "torch".

Order: the ``backend=`` argument, then the ``GADX_KERNEL_BACKEND`` environment
variable, then auto: Triton on CUDA tensors, Triton's interpreter when
``TRITON_INTERPRET=1`` (CPU tensors), the chunked PyTorch path otherwise.
"""
import os

import torch

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # the torch path needs no Triton
    HAS_TRITON = False

BACKENDS = ("triton", "torch")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str | None, device: torch.device) -> str:
    name = backend or os.environ.get("GADX_KERNEL_BACKEND") or "auto"
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {BACKENDS} or 'auto', got {name!r}")
    triton_ok = HAS_TRITON and (device.type == "cuda" or (device.type == "cpu" and interpreting()))
    if name == "auto":
        return "triton" if triton_ok else "torch"
    if name == "triton" and not triton_ok:
        raise ValueError(
            f"backend='triton' needs triton installed and CUDA tensors or TRITON_INTERPRET=1 "
            f"(triton installed: {HAS_TRITON}, device: {device}, TRITON_INTERPRET="
            f"{os.environ.get('TRITON_INTERPRET')!r})"
        )
    return name
