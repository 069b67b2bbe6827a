"""A fake GPU for the CPU build of torch: fake tensors on a stand-in accelerator device.

    with fake_gpu() as dev:             # dev == torch.device("fakecuda", 0)
        model = build_model(cfg, parallel=dataclasses.replace(dims, device=dev))
        ...                              # forward, backward, optimizer step: shapes, dtypes,
                                         # devices propagate, nothing is allocated

Why not fake ``cuda`` tensors: on torch 2.13+cpu a FakeTensorMode ``cuda`` tensor can be
created and multiplied, but Python indexing (``x[1:3]``, ``x[idx]``), ``Tensor.cuda()``,
``.to("cuda")`` and backward all go through the CUDA device guard, which a CPU build does
not have ("PyTorch is not linked with support for cuda devices"; backward aborts the
process). Megatron's forward slices tensors everywhere, so it cannot run on fake ``cuda``.
The stand-in is torch's PrivateUse1 backend renamed ``fakecuda`` with torch's dummy
Python device guard: under FakeTensorMode it takes indexing, backward and AdamW, and a
CPU tensor meeting a ``fakecuda`` tensor raises ``FakeTensorDeviceMismatchError`` exactly
as it would meet a CUDA tensor on a GPU. That is the check that matters here: every
tensor a training step makes must be on the model's device.

Bridges, active only inside ``fake_gpu()`` (each restores what it replaced on exit):
* megatron's literal CUDA uses are sent to the stand-in, as a GPU run would place them:
  ``device="cuda"`` / ``"cuda:N"`` keyword arguments, ``Tensor.cuda()``, ``.to("cuda")``,
  and ``torch.cuda.current_device()``; ``Tensor.type()`` names a ``fakecuda`` tensor
  ``torch.cuda.*Tensor`` (megatron's optimizer checks those names). The CPU adapter's
  cuda->cpu redirection (``gadx.parallel.cpu_adapter.cpu_device_mode``) is switched off
  meanwhile: it would move those tensors to the CPU and hide the GPU layout.
* ``torch.utils.swap_tensors``: ``Module.to()`` on fake parameters always swaps tensors,
  and FakeTensorMode's converter memo holds weak references to every fake Parameter,
  which swap_tensors refuses. The wrapper drops the two tensors from that memo (a cache
  for converting real tensors, which the plan never needs for parameters) first.
* ``torch.tensor(data, device=...)`` runs a real copy kernel on the target device, which the
  stand-in has none of: the tensor is made on the host and moved (``.to`` is faked); and the
  mode keeps no constant values of one-element tensors (ops on them would run for real).
* Host reads of a device value (``.item()``, ``bool()``, ``float()``) cannot be answered
  by fake tensors (DataDependentOutputException). ``host_reads_as(0.0)`` answers them with
  a placeholder where the plan chooses to (the optimizer's finite / grad-norm checks).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

DEVICE_TYPE = "fakecuda"
_registered = False


def register() -> torch.device:
    """Rename PrivateUse1 to ``fakecuda`` with torch's dummy device guard (once per process).

    Call it before the process's first backward pass: the autograd engine sizes its per-device
    queues once, then, and a device registered later fails its first backward there."""
    global _registered
    if not _registered:
        name = torch._C._get_privateuse1_backend_name()
        if name == DEVICE_TYPE:
            _registered = True
        elif name != "privateuseone":
            raise RuntimeError(f"the PrivateUse1 backend is already in use as {name!r}; gadx plan needs it")
        else:
            from torch.utils.backend_registration import _DummyBackendModule, _setup_privateuseone_for_python_backend

            class _Module(_DummyBackendModule):
                # asked of every registered backend by torch.autocast / torch.utils.checkpoint, in any
                # later code of the process (not only the plan): no AMP, no RNG state of its own
                def get_amp_supported_dtype(self):
                    return [torch.float16, torch.bfloat16]

                def get_rng_state(self, device=None):
                    return torch.zeros(8, dtype=torch.uint8)

                def set_rng_state(self, new_state, device=None):
                    pass

            _setup_privateuseone_for_python_backend(DEVICE_TYPE, backend_module=_Module())
            _registered = True
    return torch.device(DEVICE_TYPE, 0)


def _is_cuda(device: Any) -> bool:
    if isinstance(device, str):
        return device == "cuda" or device.startswith("cuda:")
    return isinstance(device, torch.device) and device.type == "cuda"


def _is_fake_dev(device: Any) -> bool:
    if isinstance(device, str):
        return device.split(":")[0] == DEVICE_TYPE
    return isinstance(device, torch.device) and device.type == DEVICE_TYPE


_TYPE_NAMES = {torch.float32: "torch.cuda.FloatTensor", torch.bfloat16: "torch.cuda.BFloat16Tensor",
               torch.float16: "torch.cuda.HalfTensor", torch.int64: "torch.cuda.LongTensor",
               torch.int32: "torch.cuda.IntTensor", torch.bool: "torch.cuda.BoolTensor"}


class _CudaToFake(TorchFunctionMode):
    """Literal CUDA placements -> the fake GPU (what a GPU run does with them)."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0].to(self.device)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs and args[0].device.type == DEVICE_TYPE:
            return _TYPE_NAMES.get(args[0].dtype, "torch.cuda.Tensor")
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = self.device
        if func in (torch.tensor, torch.as_tensor) and _is_fake_dev(kwargs.get("device")):
            # data -> tensor runs a real kernel on the target device, which the stand-in lacks:
            # build it on the host and move it (what a GPU does with host data anyway)
            dev = kwargs.pop("device")
            return func(*args, **kwargs).to(dev)
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], self.device, *args[2:])
        return func(*args, **kwargs)


class _HostReads(TorchFunctionMode):
    """``.item()`` / ``bool()`` / ``float()`` / ``int()`` of a fake tensor -> a placeholder."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.__float__):
            return float(self.value)
        if func is torch.Tensor.__int__:
            return int(self.value)
        if func is torch.Tensor.__bool__:
            return True
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_reads_as(value: float = 0.0) -> Iterator[None]:
    """Answer host reads of fake tensors with ``value`` (``bool()`` with True) inside the block."""
    with _HostReads(value):
        yield


@contextlib.contextmanager
def fake_gpu(*, allow_non_fake_inputs: bool = True) -> Iterator[torch.device]:
    """FakeTensorMode + the ``fakecuda`` device + the bridges above; yields the device."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gadx.parallel import cpu_adapter

    dev = register()
    saved = {"active": cpu_adapter._active, "current_device": torch.cuda.current_device,
             "synchronize": torch.cuda.synchronize, "swap": torch.utils.swap_tensors}
    mode = FakeTensorMode(allow_non_fake_inputs=allow_non_fake_inputs)
    # FakeTensorMode keeps the value of one-element tensors made from data and runs later ops
    # on it for real, which fails for a copy to the stand-in device (no kernels there)
    mode.may_turn_const = lambda t: False
    orig_swap = saved["swap"]

    def swap_tensors(t1, t2):
        memo = mode.fake_tensor_converter.meta_converter.tensor_memo
        for k, v in list(memo.items()):
            if v is t1 or v is t2:
                del memo[k]
        return orig_swap(t1, t2)

    cpu_adapter._active = False
    torch.cuda.current_device = lambda: dev
    torch.cuda.synchronize = lambda device=None: None
    torch.utils.swap_tensors = swap_tensors
    try:
        with mode, _CudaToFake(dev):
            yield dev
    finally:
        cpu_adapter._active = saved["active"]
        torch.cuda.current_device = saved["current_device"]
        torch.cuda.synchronize = saved["synchronize"]
        torch.utils.swap_tensors = saved["swap"]
