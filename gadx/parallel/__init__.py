"""Parallel state and the megatron glue: see state.py (init_parallel), train.py (DDP,
optimizer, schedule) and cpu_adapter.py (megatron-core on CPU)."""
from gadx.parallel.cpu_adapter import cpu_device_mode
from gadx.parallel.state import ParallelDims, current_parallel, destroy_parallel, init_parallel
from gadx.parallel.train import build_optimizer, forward_backward, wrap_ddp

__all__ = [
    "ParallelDims",
    "build_optimizer",
    "cpu_device_mode",
    "current_parallel",
    "destroy_parallel",
    "forward_backward",
    "init_parallel",
    "wrap_ddp",
]
