"""Make megatron-core 0.16.x run on CPU over gloo: the one place gadx patches megatron.

Active only when CUDA is absent: ``activate()`` is called by ``gadx.parallel.init_parallel``
and is a no-op on a machine with CUDA. It raises RuntimeError on a megatron-core outside
the pinned range (``SUPPORTED``), because every patch below names a function of that
release; a new release must be re-checked, not silently patched.

What is patched, and why (megatron-core 0.16.1, torch 2.13 CPU):

* ``torch.cuda.current_device`` -> ``"cpu"``. megatron passes ``device=torch.cuda.
  current_device()`` to allocations in the rotary embedding, the p2p shape exchange of
  the pipeline schedules, the DDP grad buffers and the distributed optimizer. On a
  CPU build of torch the original only raises, so the replacement changes no working
  path of any other library. ``torch.cuda.synchronize`` (called by the p2p code) becomes
  a no-op for the same reason.
* The model-parallel RNG tracker (``megatron.core.tensor_parallel.random``):
  ``_get_cuda_rng_state`` / ``_set_cuda_rng_state`` and ``CudaRNGStatesTracker.add`` /
  ``.fork`` read and write the CPU generator instead of the CUDA one, so
  ``model_parallel_cuda_manual_seed`` works and numbers drawn inside
  ``get_cuda_rng_tracker().fork()`` come from a separate, per-TP-rank seeded CPU stream
  (with the original code on CPU they silently came from the default stream).
* ``get_default_causal_mask`` (``transformer/utils.py``, imported into
  ``fusions/fused_softmax.py``) allocates with ``device="cuda"``: replaced by a cached
  CPU version.
* Literal ``device="cuda"`` tensors in the pipeline schedules (``total_num_tokens``),
  the optimizers (``found_inf``, ``_scale_one``), ``clip_grads`` and the grad buffers, plus
  the ``Tensor.type() == 'torch.cuda.FloatTensor'`` checks of the (distributed) optimizer
  and ``Tensor.cuda()`` in the tied-embedding set-up: these sit in the middle of long
  functions, so instead of copying those functions ``cpu_device_mode()`` (a
  ``TorchFunctionMode``) redirects ``device="cuda"`` to CPU, makes ``Tensor.cuda()`` the
  identity and reports CPU float tensors under their CUDA type name. It is entered only
  around the calls that need it: model construction under PP (tied embeddings), DDP
  and optimizer construction, the forward/backward schedule and the optimizer step
  (``gadx.parallel.schedule`` does this for the trainer). Model forward passes outside
  the schedule (sampling, scoring) run without it.

Overhead (``python benchmarks/cpu_adapter_overhead.py``):
the function patches cost nothing per call (they replace functions that would raise on a
CPU build). ``cpu_device_mode()`` adds one Python dispatch to every torch call made inside
it. Measured 2026-11-28 on the shared 2-core CPU (load average ~8, min of 15 interleaved
repeats): 5.0 -> 7.8 us per small torch call (+2.8 us), and 100.4 -> 105.2 ms (+5%) per
forward+backward of a tiny 2-layer H=64 model on 8x128 tokens. The mode is therefore kept
off the model forward used for sampling and scoring, and on only around the schedule and
the optimizer, where it is the price of running megatron's unmodified training code.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode

SUPPORTED = ((0, 16), (0, 17))  # [min, max): releases whose CUDA hard-codes were checked
_active = False


def megatron_version() -> tuple[int, ...]:
    from megatron.core import package_info

    return tuple(int(p) for p in package_info.__version__.split(".")[:2])


def is_needed() -> bool:
    return not torch.cuda.is_available()


def is_active() -> bool:
    return _active


def activate() -> None:
    """Install the CPU patches (idempotent; no-op when CUDA is available)."""
    global _active
    if _active or not is_needed():
        return
    version = megatron_version()
    lo, hi = SUPPORTED
    if not lo <= version < hi:
        raise RuntimeError(
            f"gadx's megatron-core CPU adapter supports megatron-core {lo[0]}.{lo[1]}.x only, "
            f"found {'.'.join(map(str, version))}: re-check the patched functions before widening the pin"
        )
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda device=None: None
    _patch_rng()
    _patch_causal_mask()
    _active = True


# ---- RNG tracker ----------------------------------------------------------------------------


def _patch_rng() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    def get_state(device="cuda", clone=False, graph_safe=False):
        return torch.get_rng_state()

    def set_state(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    def add(self, name, seed):
        self._is_initialized = True
        if seed in self.seeds_:
            raise Exception(f"seed {seed} already exists")
        self.seeds_.add(seed)
        if name in self.states_:
            raise Exception(f"rng state {name} already exists")
        orig = torch.get_rng_state()
        torch.manual_seed(seed)
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(orig)

    @contextlib.contextmanager
    def fork(self, name=mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME):
        # Same bookkeeping as megatron's fork, minus its "CPU RNG state changed" warning:
        # on CPU the tracked state *is* the CPU state.
        if name not in self.states_:
            raise Exception(f"rng state {name} is not added")
        orig_state = torch.get_rng_state()
        orig_name = self._current_state_name
        if orig_name != "default-rng":
            self.states_[orig_name] = orig_state
        torch.set_rng_state(self.states_[name])
        self._current_state_name = name
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            if orig_name != "default-rng":
                orig_state = self.states_[orig_name]
            torch.set_rng_state(orig_state)
            self._current_state_name = orig_name

    mrandom._get_cuda_rng_state = get_state
    mrandom._set_cuda_rng_state = set_state
    mrandom.CudaRNGStatesTracker.add = add
    mrandom.CudaRNGStatesTracker.fork = fork


# ---- causal mask ----------------------------------------------------------------------------


def _patch_causal_mask() -> None:
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils as tutils

    @functools.lru_cache(maxsize=32)
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq), diagonal=1).bool()

    tutils.get_default_causal_mask = get_default_causal_mask
    fused_softmax.get_default_causal_mask = get_default_causal_mask


# ---- scoped device redirection --------------------------------------------------------------

_CUDA_TYPE = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _is_cuda(device) -> bool:
    return (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda"
    )


class _CpuDeviceMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and "dtype" not in kwargs:
            name = func(*args, **kwargs)
            return _CUDA_TYPE.get(name, name)
        device = kwargs.get("device")
        if device is not None and _is_cuda(device):
            kwargs["device"] = "cpu"
        elif func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def cpu_device_mode():
    """Redirect megatron's literal CUDA uses to CPU inside the block (no-op with CUDA)."""
    if not _active:
        yield
        return
    with _CpuDeviceMode():
        yield
