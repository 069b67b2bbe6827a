"""Layout-changing checkpoints with megatron-core's distributed checkpointing.

    from gadx.parallel.dist_ckpt import save_sharded, load_sharded
    save_sharded("ckpt/step-40", {"student": G, "discriminator": D}, extra={"step": 40})
    ...                                        # later, at any TP/PP/DP layout:
    extra = load_sharded("ckpt/step-40", {"student": G2, "discriminator": D2})
    save_sharded(path, {"student": ddp_chunk}, optimizers={"student": opt})   # + optimizer state
    load_sharded(path, {"student": ddp_chunk}, optimizers={"student": opt})   # at any layout too

Every rank calls both (collective). Each model is a ``GadxModel`` (or megatron DDP around
one); its tensors are written once as *global* tensors (megatron's ``torch_dist`` format:
every rank writes only the shards it owns as main replica, TP/PP/DP duplicates are
skipped), so a checkpoint saved at TP1PP1 loads at TP2, PP2, TP2xPP2 and back. The vocab
padding that differs per TP size (``padded_vocab_size``) is handled by megatron's
``allow_shape_mismatch`` on the embedding and LM head (pad rows load as zeros). The
models must have been built for the same ``ModelConfig`` and head.

Optimizer state (``optimizers={"student": opt}``, the megatron optimizer from
``build_optimizer`` over the DDP-wrapped model passed under the same name) is saved in
megatron's ``fully_reshardable`` format: fp32 main weights and Adam moments as global
tensors in model space, so a run saved at one TP/PP/DP layout resumes at any other.
megatron-core 0.16.1 needs five bridges, below: its save puts the state of parameters past a
grad buffer's first bucket under other parameters' names (``_buffer_space_world_state``; a
buffer has several buckets at PP > 1); with bf16 weights and fp32 norms it pairs parameters
with other parameters' main copies (``_match_inner_param_order``); and, without Apex/TE, its
state_dict asserts on a
never-stepped optimizer (``_ensure_adam_state``), its loader copies every per-parameter state
key, torch Adam's ``step`` included, which the checkpoint holds only in the param groups
(``_skip_step_copy``), and the restored count lands in one tensor shared by all parameters
(``_restore_adam_steps``).

Saving uses megatron's default ``torch_dist`` strategy, which starts a helper process
(``multiprocessing`` spawn context, for its results queue) and forks writer processes:
the entry script must be guarded by ``if __name__ == "__main__":`` and psutil must be
installed. ``thread_count=1`` keeps the number of writer processes per rank at one. That
helper is started by ``gadx.lifetime.checkpoint_results_queue`` so that it dies with the rank.

Loading never runs code from the checkpoint folder (docs/design/pitfalls.md, "Checkpoint files are
code"): torch's reader unpickles ``.metadata`` with plain ``pickle.load`` and the
``_extra_state`` objects inside ``*.distcp`` with ``torch.load(weights_only=False)``, and
megatron's ``common.pt`` is a torch pickle. ``load_sharded`` reads ``.metadata`` through an
unpickler that allows only torch's checkpoint-metadata classes, checks every byte object with
torch's weights-only unpickler before torch loads it, and loads ``common.pt`` with
``weights_only=True``; anything else is refused with a one-line ValueError naming the file.
"""
from __future__ import annotations

import contextlib
import io
import json
import pickle
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

EXTRA_FILE = "gadx_extra.json"


def _gadx_model(m):
    # a GadxModel is the first of the `.module` chain with `.dims` (no import of gadx.models here:
    # the model layer imports gadx.parallel, not the other way round)
    while not hasattr(m, "dims"):
        if not hasattr(m, "module"):
            raise ValueError(f"expected a GadxModel (or megatron DDP around one), got {type(m).__name__}")
        m = m.module
    return m


OPT_SHARDING = "fully_reshardable"  # model-space optimizer state: loads at any TP/PP/DP layout


def _check_names(models: dict[str, Any], optimizers: dict[str, Any]) -> None:
    for name in models:
        if not name or "." in name or "/" in name:
            raise ValueError(f"model names must be non-empty and free of '.' and '/', got {name!r}")
    extra = sorted(set(optimizers) - set(models))
    if extra:
        raise ValueError(f"optimizers {extra} have no model of the same name in {sorted(models)}")


def _sharded(models: dict[str, Any], optimizers: dict[str, Any], *, is_loading: bool) -> dict[str, dict]:
    md = {"distrib_optim_sharding_type": OPT_SHARDING}
    # Always the GadxModel's own keys (megatron DDP would add "module."): a checkpoint saved with or
    # without optimizer state, from a DDP chunk or a bare model, loads into either.
    out = {name: _gadx_model(m).sharded_state_dict(prefix=f"{name}.", metadata=md) for name, m in models.items()}
    for name, opt in optimizers.items():
        _match_inner_param_order(opt)
        # the optimizer finds its params' checkpoint keys through these sharded tensors (by identity)
        with _buffer_space_world_state(opt):
            out[f"{name}@optimizer"] = opt.sharded_state_dict(out[name], is_loading=is_loading, metadata=md)
    return out


def _layout() -> dict:
    from gadx.parallel.state import current_parallel

    d = current_parallel()
    return {"tp": d.tp, "pp": d.pp, "dp": d.dp}


def save_sharded(path, models: dict[str, Any], *, optimizers: dict[str, Any] | None = None,
                 extra: dict | None = None) -> float:
    """Write the models' weights (and the named megatron optimizers' state) under ``path``
    (created; must be empty or absent). ``extra``: a JSON-able dict written by global rank 0.
    Returns the wall time (s)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    optimizers = optimizers or {}
    _check_names(models, optimizers)
    t0 = time.perf_counter()
    folder = Path(path)
    rank = dist.get_rank()
    if rank == 0:
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"{folder}: checkpoint folder is not empty")
        folder.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    from gadx.parallel.cpu_adapter import cpu_device_mode

    for opt in optimizers.values():
        _ensure_adam_state(opt)  # e.g. D's optimizer during G-only warmup steps
    from gadx.lifetime import checkpoint_results_queue

    checkpoint_results_queue()  # megatron's writer helper process, made to die with this one (no orphans)
    with cpu_device_mode():
        dist_checkpointing.save(_sharded(models, optimizers, is_loading=False), str(folder),
                                sharded_strategy=TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=1))
    if rank == 0:
        meta = {"models": sorted(models), "optimizers": sorted(optimizers), "layout": _layout(), "extra": extra or {},
                "configs": {n: _gadx_model(m).config.to_hf_dict() for n, m in models.items()}}
        (folder / EXTRA_FILE).write_text(json.dumps(meta, indent=2))
    dist.barrier()
    return time.perf_counter() - t0


def load_sharded(path, models: dict[str, Any], *, optimizers: dict[str, Any] | None = None) -> dict:
    """Fill the models (built at this process's layout) and, if given, the optimizers from
    ``path``; returns ``extra``. Any layout: weights and optimizer state are resharded."""
    from megatron.core import dist_checkpointing

    optimizers = optimizers or {}
    _check_names(models, optimizers)
    folder = Path(path)
    meta_file = folder / EXTRA_FILE
    if not meta_file.is_file():
        raise ValueError(f"{folder}: not a gadx sharded checkpoint (no {EXTRA_FILE})")
    meta = json.loads(meta_file.read_text())
    missing = sorted(set(models) - set(meta["models"]))
    if missing:
        raise ValueError(f"{folder}: holds models {meta['models']}, asked for {missing}")
    missing = sorted(set(optimizers) - set(meta["optimizers"]))
    if missing:
        raise ValueError(f"{folder}: holds optimizer state for {meta['optimizers']}, asked for {missing}")
    for name, m in models.items():
        want, have = meta["configs"][name], _gadx_model(m).config.to_hf_dict()
        if want != have:
            diff = {k: (want.get(k), have.get(k)) for k in set(want) | set(have) if want.get(k) != have.get(k)}
            raise ValueError(f"{folder}: model {name!r} was saved with another config: {diff} (saved, built)")
    from gadx.parallel.cpu_adapter import cpu_device_mode

    for opt in optimizers.values():
        _ensure_adam_state(opt)
    with cpu_device_mode(), _data_only_reads(folder):
        state = dist_checkpointing.load(_sharded(models, optimizers, is_loading=True), str(folder),
                                        sharded_strategy=_torch_dist_load_strategy(),
                                        common_strategy=_data_only_common_strategy())
    for name, m in models.items():
        g = _gadx_model(m)
        g.load_state_dict(state[name], strict=True)
        g.zero_vocab_padding()  # pad rows past the saved vocab load as zeros; keep the invariant explicit
    for name, opt in optimizers.items():
        with cpu_device_mode(), torch.no_grad(), _skip_step_copy(opt):  # megatron copies into views of leaf main params
            opt.load_state_dict(state[f"{name}@optimizer"])
        _restore_adam_steps(opt)
    return meta["extra"]


# ---- loading without running code from the folder -------------------------------------------

# What torch's distributed-checkpoint ``.metadata`` pickle may name: its own metadata and plan
# records (dataclasses and enums, built from plain values), torch.Size, dtypes and layouts.
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                              "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.distributed.checkpoint.planner": {"SavePlan", "TensorWriteData", "WriteItem", "WriteItemType",
                                             "BytesIOWriteData", "LoadItemType", "ReadItem"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles ``.metadata`` allowing only ``_METADATA_GLOBALS`` (and torch dtypes): a planted
    pickle that names os.system, builtins.exec, ... is refused before anything is called."""

    def find_class(self, module: str, name: str):
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if name in _METADATA_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (not checkpoint metadata)")


class _RestrictedPickle:
    """Stands in for the ``pickle`` module inside torch's filesystem reader during a load."""

    def __getattr__(self, name: str):
        return getattr(pickle, name)

    @staticmethod
    def load(file, **kwargs):
        return _MetadataUnpickler(file, **kwargs).load()


def _refusal(path, e: Exception | str) -> ValueError:
    """One line naming the file and, from torch's long weights-only message, the refused global."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    why = next((line for line in lines if any(w in line for w in ("Unsupported global", "unsupported GLOBAL", "refused global"))),
               lines[0] if lines else type(e).__name__)
    if "refused global" in why:
        why = "refused global" + why.split("refused global", 1)[1]
    return ValueError(f"{path}: refused to load: not plain checkpoint data ({why})")


@contextlib.contextmanager
def _data_only_reads(folder: Path):
    """During a load: ``.metadata`` through ``_MetadataUnpickler``; each byte object (megatron's
    ``_extra_state``) checked by torch's weights-only unpickler before torch's planner unpickles
    the same bytes."""
    import torch.distributed.checkpoint.filesystem as fs_reader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    load_bytes = DefaultLoadPlanner.load_bytes

    def checked_load_bytes(self, read_item, value):
        data = value.read()
        try:
            torch.load(io.BytesIO(data), weights_only=True)
        except pickle.UnpicklingError as e:
            raise _refusal(folder / f"*.distcp [{read_item.dest_index.fqn}]", e) from None
        return load_bytes(self, read_item, io.BytesIO(data))

    try:  # first read it ourselves: torch's reader logs a traceback and retries per-rank files on failure
        with open(folder / ".metadata", "rb") as f:
            _MetadataUnpickler(f).load()
    except FileNotFoundError:
        pass  # torch's own error follows
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise _refusal(folder / ".metadata", e) from None
    fs_reader.pickle, DefaultLoadPlanner.load_bytes = _RestrictedPickle(), checked_load_bytes
    try:
        yield
    except (Exception, CheckpointException) as e:  # torch wraps each rank's reader error, traceback and all, in one
        # CheckpointException (a BaseException)
        lines = str(e).splitlines()
        ours = next((line for line in lines if "refused to load" in line), None)
        if ours is not None:
            raise ValueError(ours.split("ValueError: ", 1)[-1].strip()) from None
        if isinstance(e, pickle.UnpicklingError) or any("refused global" in line for line in lines):
            raise _refusal(folder / ".metadata", e) from None
        raise
    finally:
        fs_reader.pickle, DefaultLoadPlanner.load_bytes = pickle, load_bytes


def _torch_dist_load_strategy():
    """Always torch_dist: ``metadata.json`` cannot switch the load to another backend's reader."""
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistLoadShardedStrategy

    return TorchDistLoadShardedStrategy()


def _data_only_common_strategy():
    """megatron's ``common.pt`` loader with ``weights_only=True`` stated, not inherited from
    torch's default (which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off)."""
    from megatron.core.dist_checkpointing.strategies.common import TorchCommonLoadStrategy

    class DataOnlyCommon(TorchCommonLoadStrategy):
        def load_common(self, checkpoint_dir):
            path = Path(checkpoint_dir) / "common.pt"
            if not path.is_file():
                return super().load_common(checkpoint_dir)  # megatron's own missing-file error
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise _refusal(path, e) from None

    return DataOnlyCommon()


def _ensure_adam_state(opt) -> None:
    """Give a never-stepped optimizer the Adam state torch would create at its first step (step 0,
    zero moments: the same update follows): without Apex/TE, megatron's
    DistributedOptimizer.state_dict reads the step count off the inner torch optimizer's
    per-parameter state and asserts when there is none."""
    for o in getattr(opt, "chained_optimizers", [opt]):
        inner = o.optimizer
        if not isinstance(inner, torch.optim.Adam | torch.optim.AdamW):
            raise ValueError(f"optimizer state loading supports megatron's Adam only, got {type(inner).__name__}")
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)


def _match_inner_param_order(opt) -> None:
    """megatron maps each model parameter to its main parameter's place in the inner optimizer's
    param groups in grad-buffer order (bf16 buffer first), but fills each group fp32 parameters
    first: with mixed dtypes (bf16 weights, fp32 norms) a parameter's state came from another
    one of another size. Rebuild the map in the inner optimizer's order (fp32, then bf16)."""
    for o in getattr(opt, "chained_optimizers", [opt]):
        assert not o.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8, "gadx builds plain Adam"
        for g, (fp32, low) in enumerate(zip(o.model_fp32_groups, o.model_float16_groups)):
            for i, p in enumerate([*fp32, *low]):
                o.model_param_group_index_map[p] = (g, i)
                assert o.optimizer.param_groups[g]["params"][i].numel() <= p.numel()


@contextlib.contextmanager
def _buffer_space_world_state(opt):
    """megatron's fully_reshardable save gathers each grad buffer's optimizer state with the
    padding between buckets removed, then slices it with parameter offsets that count that
    padding: every parameter after the first bucket gets another parameter's state. A buffer
    has several buckets at PP > 1 (the shared embedding on the last stage gets its own), where
    Adam state saved at PP=2 resumed with wrong weights. Put each bucket back at its offset."""
    patched = []
    for o in getattr(opt, "chained_optimizers", [opt]):
        gather = o.get_parameter_state_dp_zero

        def in_buffer_space(*args, o=o, gather=gather, **kwargs):
            state = gather(*args, **kwargs)
            if state is None:
                return None
            for gbuf_idx, by_dtype in state.items():
                if gbuf_idx == "buckets_coalesced":
                    continue
                buffer = o.buffers[gbuf_idx]
                for world in by_dtype.values():
                    for key, flat in world.items():
                        if key == "numel_unpadded":
                            continue
                        spaced = flat.new_zeros(buffer.numel)
                        start = 0
                        for bucket in buffer.buckets:
                            n = bucket.numel_unpadded
                            spaced[bucket.offset:bucket.offset + n] = flat[start:start + n]
                            start += n
                        assert start == flat.numel(), (start, flat.numel())
                        world[key] = spaced
            return state

        o.get_parameter_state_dp_zero = in_buffer_space
        patched.append(o)
    try:
        yield
    finally:
        for o in patched:
            del o.get_parameter_state_dp_zero


@contextlib.contextmanager
def _skip_step_copy(opt):
    """megatron's fully_reshardable loader copies each per-parameter optimizer state key from the
    checkpoint, torch Adam's ``step`` included, which it never saves (the count lives in the
    param groups): hide ``step`` from that copy; ``_restore_adam_steps`` sets it afterwards."""
    originals = []
    for o in getattr(opt, "chained_optimizers", [opt]):
        set_states = o._set_main_param_and_optimizer_states

        def without_step(model_param, tensors, o=o, set_states=set_states):
            group, order = o.model_param_group_index_map[model_param]
            state = o.optimizer.state[o.optimizer.param_groups[group]["params"][order]]
            step = state.pop("step", None)
            try:
                set_states(model_param, tensors)
            finally:
                if step is not None:
                    state["step"] = step

        o._set_main_param_and_optimizer_states = without_step
        originals.append(o)
    try:
        yield
    finally:
        for o in originals:
            del o._set_main_param_and_optimizer_states  # back to the class's method


def _restore_adam_steps(opt) -> None:
    """megatron (without Apex/TE) restores torch Adam's step count into the param groups and
    into one tensor shared by all parameters, which the bucket-state load then overwrites with
    a placeholder: give each parameter its own step tensor with the saved count."""
    for o in getattr(opt, "chained_optimizers", [opt]):
        inner = o.optimizer
        for group in inner.param_groups:
            assert "step" in group, "megatron did not restore the step count"
            for p in group["params"]:
                inner.state[p]["step"] = torch.tensor(float(group["step"]), dtype=torch.float32)


def checkpoint_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


__all__ = ["checkpoint_bytes", "load_sharded", "save_sharded"]

