"""init_parallel: the one place gadx sets up torch.distributed and megatron's parallel state.

    dims = init_parallel(tp=2, pp=1)     # under `torchrun --nproc-per-node 2 ...`
    model = gadx.models.build_model(cfg, parallel=dims)
    ...
    destroy_parallel()

Launched by torchrun it reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; otherwise it
starts a single-process group on a free local port. Backend: nccl with CUDA, gloo without
(and then the CPU adapter is activated). Everything else in gadx reads the returned
``ParallelDims`` instead of megatron's globals.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gadx.parallel import cpu_adapter


@dataclass(frozen=True)
class ParallelDims:
    tp: int
    pp: int
    dp: int
    rank: int
    world: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    device: torch.device
    tp_group: object
    pp_group: object
    dp_group: object

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp - 1


_dims: ParallelDims | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_parallel(tp: int = 1, pp: int = 1, *, backend: str | None = None, seed: int = 0) -> ParallelDims:
    """Initialise torch.distributed, megatron parallel_state and the model-parallel RNG.

    Calling it again with the same sizes returns the existing ``ParallelDims``; with other
    sizes it raises (call ``destroy_parallel()`` first).
    """
    global _dims
    if tp < 1 or pp < 1:
        raise ValueError(f"tensor/pipeline parallel sizes must be >= 1, got tp={tp} pp={pp}")
    if _dims is not None:
        if (_dims.tp, _dims.pp) != (tp, pp):
            raise ValueError(f"parallel state already initialised with tp={_dims.tp} pp={_dims.pp}, asked tp={tp} pp={pp}")
        return _dims

    cuda = torch.cuda.is_available()
    if not cuda:
        cpu_adapter.activate()
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            init_method = "env://"
        else:
            rank, world = 0, 1
            init_method = f"tcp://127.0.0.1:{_free_port()}"
        backend = backend or ("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    world = dist.get_world_size()
    if world % (tp * pp):
        raise ValueError(f"world size {world} is not divisible by tp*pp = {tp}*{pp}")

    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    _dims = ParallelDims(
        tp=tp,
        pp=pp,
        dp=ps.get_data_parallel_world_size(),
        rank=dist.get_rank(),
        world=world,
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
        device=device,
        tp_group=ps.get_tensor_model_parallel_group(),
        pp_group=ps.get_pipeline_model_parallel_group(),
        dp_group=ps.get_data_parallel_group(),
    )
    return _dims


def current_parallel() -> ParallelDims | None:
    """The ParallelDims of this process, or None before init_parallel."""
    return _dims


def destroy_parallel(*, keep_process_group: bool = False) -> None:
    """Tear down megatron parallel state and (unless ``keep_process_group``, e.g. to
    re-initialise at another TP/PP layout in the same processes) the process group.

    A barrier first: gloo sometimes aborts at exit when a peer is still tearing down."""
    global _dims
    from megatron.core import parallel_state as ps

    if dist.is_initialized():
        dist.barrier()
    ps.destroy_model_parallel()
    if dist.is_initialized() and not keep_process_group:
        dist.destroy_process_group()
    _dims = None
