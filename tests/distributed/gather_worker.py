"""One rank of the full-state gather check (test_gather.py): ``gadx.parallel.gather_hf_state_dict``,
every target and placement, against the gather the trainer used before it (``old_full_hf_state``
below: the stages' host copies pickled through ``all_gather_object``), kept here as the reference.
Several layouts share one launch (imports dominate the cost).

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/gather_worker.py OUT 2x1 1x2

Writes OUT/tp{TP}pp{PP}/rank{R}.pt: the student's and the discriminator's gathered keys on this rank.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist


def tiny_config():
    from gadx.models import ModelConfig

    # odd vocab (padded at TP=2), GQA, QKV bias, tied embeddings (the last stage's copy is not gathered)
    return ModelConfig(family="qwen2", vocab_size=517, hidden_size=64, intermediate_size=96, num_layers=4,
                       num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
                       max_position_embeddings=64)


def old_full_hf_state(model) -> dict[str, torch.Tensor]:
    """The trainer's PP gather before gadx.parallel.gather took its place (train/player.py)."""
    from gadx.models import hf_state_dict

    sd = hf_state_dict(model)
    dims = model.dims
    if dims.pp == 1:
        return sd
    parts: list = [None] * dims.pp
    dist.all_gather_object(parts, {k: v.detach().cpu() for k, v in sd.items()}, group=dims.pp_group)
    full: dict[str, torch.Tensor] = {}
    for part in parts:
        for k, v in part.items():
            full.setdefault(k, v)
    if model.config.tie_embeddings:
        full.pop("lm_head.weight", None)
    return full


def check_same(got: dict, want: dict, what: str) -> None:
    assert list(got) == list(want) or sorted(got) == sorted(want), f"{what}: keys differ: {set(got) ^ set(want)}"
    for k in want:
        assert got[k].dtype == want[k].dtype, f"{what}: {k} dtype {got[k].dtype} != {want[k].dtype}"
        assert got[k].shape == want[k].shape, f"{what}: {k} shape {tuple(got[k].shape)} != {tuple(want[k].shape)}"
        assert torch.equal(got[k], want[k]), f"{what}: {k} differs"


def check_host_copy(got: dict, model, what: str) -> None:
    """host=True: every tensor on the host, none sharing memory with a parameter (a copy, not a view)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for k, v in got.items():
        assert v.device.type == "cpu", f"{what}: {k} on {v.device}"
        assert v.untyped_storage().data_ptr() not in params, f"{what}: {k} aliases a parameter"


def run(tp: int, pp: int, out: Path) -> None:
    from gadx.models import build_model
    from gadx.parallel import gather_hf_state_dict, init_parallel, wrap_ddp

    dims = init_parallel(tp, pp)
    cfg = tiny_config()
    g = build_model(cfg, parallel=dims, seed=3)
    d = build_model(cfg, head="score", parallel=dims, dtype=torch.bfloat16, seed=4)  # two dtypes: two flat buffers
    seen = {}
    for name, model in (("student", g), ("discriminator", d)):
        want = old_full_hf_state(model)
        where = f"tp{tp}pp{pp} rank {dims.rank} {name}"
        check_same(gather_hf_state_dict(model), want, f"{where} to=all")
        host = gather_hf_state_dict(model, host=True)
        check_same(host, want, f"{where} to=all host")
        check_host_copy(host, model, f"{where} to=all host")
        for host in (False, True):
            first = gather_hf_state_dict(model, to="first_stage", host=host)
            if dims.is_first_stage:
                check_same(first, want, f"{where} to=first_stage host={host}")
            else:
                assert first == {}, f"{where} to=first_stage host={host}: stage {dims.pp_rank} got {sorted(first)}"
        seen[name] = sorted(want)
    # through the wrappers the trainer holds (megatron DDP): the same tensors
    check_same(gather_hf_state_dict(wrap_ddp([g])[0]), old_full_hf_state(g), f"tp{tp}pp{pp} rank {dims.rank} DDP")
    torch.save(seen, out / f"rank{dims.rank}.pt")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    from gadx.parallel import destroy_parallel

    out_root, layouts = Path(sys.argv[1]), sys.argv[2:]
    for i, layout in enumerate(layouts):
        tp, pp = map(int, layout.split("x"))
        sub = out_root / f"tp{tp}pp{pp}"
        sub.mkdir(parents=True, exist_ok=True)
        run(tp, pp, sub)
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
