"""Parallel state and the megatron glue: see state.py (init_parallel), schedule.py (DDP,
optimizer, megatron's forward/backward schedule), cpu_adapter.py (megatron-core on CPU), dist_ckpt.py (layout-changing
checkpoints) and gather.py (full HF weights for the rollout sampler)."""
from gadx.parallel.cpu_adapter import cpu_device_mode
from gadx.parallel.dist_ckpt import load_sharded, save_sharded
from gadx.parallel.gather import gather_hf_state_dict
from gadx.parallel.state import ParallelDims, current_parallel, destroy_parallel, init_parallel
from gadx.parallel.schedule import build_optimizer, forward_backward, wrap_ddp

__all__ = [
    "ParallelDims",
    "build_optimizer",
    "cpu_device_mode",
    "current_parallel",
    "destroy_parallel",
    "forward_backward",
    "gather_hf_state_dict",
    "init_parallel",
    "load_sharded",
    "save_sharded",
    "wrap_ddp",
]
