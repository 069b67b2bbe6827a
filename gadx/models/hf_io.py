"""Hugging Face checkpoints <-> gadx models (safetensors only), at any TP/PP layout.

    model = from_pretrained("ckpt/", head="lm")       # or head="score" (discriminator)
    save_pretrained(model, "out/")                   # AutoModelForCausalLM.from_pretrained("out/") works
    sd = hf_state_dict(model)                        # HF names -> tensors of this rank (sampler sync)

Loading streams: each HF tensor is read from the memory-mapped safetensors file, sliced
to this rank's TP shard and copied into the parameter, one tensor at a time. Pickled
weights (.bin/.pt/.pth) are refused. Saving under TP gathers each parameter over the TP
group; each pipeline stage writes its own shard file and global rank 0 writes the index;
shard files are cut at ``max_shard_bytes`` so at most one shard of HF tensors is held.

Loading ``head="score"`` from a causal-LM checkpoint takes the backbone from it and
keeps the freshly (seeded) initialised score head; a discriminator checkpoint (with
``score.weight``/``score.bias``) loads its head too.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from gadx.models.config import ModelConfig
from gadx.models.gpt import GadxModel, build_model, padded_vocab_size
from gadx.models.safetensors_folder import PICKLED, open_safetensors, weight_files
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)


@dataclass
class Entry:
    """One megatron parameter <-> its HF tensors. ``split`` makes this rank's shard from the
    full HF tensors; ``merge`` makes the HF tensors from the list of TP shards."""

    param: torch.nn.Parameter
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    split: Callable[..., torch.Tensor]
    merge: Callable[[list[torch.Tensor]], tuple[torch.Tensor, ...]]
    save: bool = True  # False for the last stage's copy of a tied embedding (loaded, not saved)


def _entries(model: GadxModel) -> list[Entry]:
    cfg, dims, gpt = model.config, model.dims, model.gpt
    tp, r = dims.tp, dims.tp_rank
    H, V = cfg.hidden_size, cfg.vocab_size
    nq, nkv, hd, F = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    qpg = nq // nkv
    v_local = padded_vocab_size(V, tp) // tp

    def rep(p, name, shape):
        return Entry(p, (name,), (shape,), lambda t: t, lambda s: (s[0],))

    def rows(p, name, shape):
        return Entry(p, (name,), (shape,), lambda t: t.chunk(tp, 0)[r], lambda s: (torch.cat(s, 0) if tp > 1 else s[0],))

    def cols(p, name, shape):
        return Entry(p, (name,), (shape,), lambda t: t.chunk(tp, 1)[r], lambda s: (torch.cat(s, 1) if tp > 1 else s[0],))

    def vocab(p, name):
        def split(t):
            out = t.new_zeros(v_local, H)
            lo, hi = model.vocab_range
            out[: hi - lo] = t[lo:hi]
            return out

        return Entry(p, (name,), ((V, H),), split, lambda s: ((torch.cat(s, 0) if tp > 1 else s[0])[:V],))

    def qkv(p, prefix, bias):
        names = tuple(f"{prefix}.{x}_proj.{'bias' if bias else 'weight'}" for x in "qkv")
        tail = () if bias else (H,)
        shapes = ((nq * hd, *tail), (nkv * hd, *tail), (nkv * hd, *tail))

        def split(q, k, v):
            # megatron groups rows per KV head: [q heads of group g, k_g, v_g]
            g = torch.cat([q.reshape(nkv, qpg * hd, *tail), k.reshape(nkv, hd, *tail), v.reshape(nkv, hd, *tail)], 1)
            return g.chunk(tp, 0)[r].reshape(-1, *tail)

        def merge(s):
            g = (torch.cat(s, 0) if tp > 1 else s[0]).view(nkv, (qpg + 2) * hd, *tail)
            q, k, v = g.split([qpg * hd, hd, hd], dim=1)
            return q.reshape(nq * hd, *tail), k.reshape(nkv * hd, *tail), v.reshape(nkv * hd, *tail)

        return Entry(p, names, shapes, split, merge)

    def fc1(p, prefix):
        def split(gate, up):
            return torch.cat([gate.chunk(tp, 0)[r], up.chunk(tp, 0)[r]], 0)

        def merge(s):
            halves = [x.chunk(2, 0) for x in s]
            if tp == 1:
                return halves[0]
            return torch.cat([h[0] for h in halves], 0), torch.cat([h[1] for h in halves], 0)

        return Entry(p, (f"{prefix}.gate_proj.weight", f"{prefix}.up_proj.weight"), ((F, H), (F, H)), split, merge)

    out: list[Entry] = []
    if gpt.pre_process:
        out.append(vocab(gpt.embedding.word_embeddings.weight, "model.embed_tokens.weight"))
    for layer in gpt.decoder.layers:
        i = layer.layer_number - 1
        pre = f"model.layers.{i}"
        att, mlp = layer.self_attention, layer.mlp
        in_norm = getattr(att.linear_qkv, "layer_norm_weight", None)  # TE fuses the norm into the linear
        in_norm = in_norm if in_norm is not None else layer.input_layernorm.weight
        post_norm = getattr(mlp.linear_fc1, "layer_norm_weight", None)
        post_norm = post_norm if post_norm is not None else layer.pre_mlp_layernorm.weight
        out.append(rep(in_norm, f"{pre}.input_layernorm.weight", (H,)))
        out.append(qkv(att.linear_qkv.weight, f"{pre}.self_attn", bias=False))
        if cfg.qkv_bias:
            out.append(qkv(att.linear_qkv.bias, f"{pre}.self_attn", bias=True))
        out.append(cols(att.linear_proj.weight, f"{pre}.self_attn.o_proj.weight", (H, nq * hd)))
        out.append(rep(post_norm, f"{pre}.post_attention_layernorm.weight", (H,)))
        out.append(fc1(mlp.linear_fc1.weight, f"{pre}.mlp"))
        out.append(cols(mlp.linear_fc2.weight, f"{pre}.mlp.down_proj.weight", (H, F)))
    if gpt.post_process:
        out.append(rep(gpt.decoder.final_layernorm.weight, "model.norm.weight", (H,)))
        if model.head == "score":
            out.append(rep(gpt.score_head.weight, "score.weight", (1, H)))
            out.append(rep(gpt.score_head.bias, "score.bias", (1,)))
        elif not gpt.share_embeddings_and_output_weights:
            out.append(vocab(gpt.output_layer.weight, "lm_head.weight"))
        elif not gpt.pre_process:  # tied under PP: the last stage holds a copy of the embedding
            copy = vocab(gpt.output_layer.weight, "model.embed_tokens.weight")
            copy.save = False
            out.append(copy)
    return out


# ---- loading ----------------------------------------------------------------------------------


def from_pretrained(path, *, dtype=torch.float32, head: str = "lm", parallel=None, use_te: bool = False,
                    fp8=None, seed: int = 0, perf=None) -> GadxModel:
    """Build the model for this rank's TP/PP shard and load it from an HF folder
    (``use_te`` / ``fp8`` / ``perf`` as in ``build_model``)."""
    from gadx.models.fp8 import resolve_fp8

    resolve_fp8(fp8, use_te=use_te)  # refuse an impossible fp8 before reading anything

    folder = Path(path)
    if folder.is_file():
        if folder.suffix in PICKLED:
            raise ValueError(f"{folder}: pickled checkpoint; gadx loads safetensors only")
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{folder}: checkpoint folder not found")
    cfg = ModelConfig.from_pretrained(folder)
    files = weight_files(folder)
    config_file = folder / "config.json"
    from gadx.parallel import current_parallel, init_parallel

    dims = parallel or current_parallel() or init_parallel(1, 1)
    try:
        cfg.check_parallel(dims.tp)
        if cfg.num_layers % dims.pp:
            raise ValueError(f"pipeline parallel size {dims.pp} does not divide num_layers={cfg.num_layers}")
    except ValueError as e:
        raise ValueError(f"{config_file}: {e}") from None
    model = build_model(cfg, head=head, parallel=dims, dtype=dtype, use_te=use_te, fp8=fp8, seed=seed,
                        init_weights=False, perf=perf)
    model.source_folder = folder

    handles = {}

    def read(name: str, shape) -> torch.Tensor:
        file = files.get(name)
        if file is None:
            raise ValueError(f"{folder}: tensor {name!r} is missing from the checkpoint")
        if file not in handles:
            if not file.is_file():
                raise ValueError(f"{file}: listed in the index but not found")
            handles[file] = open_safetensors(file)
        try:
            t = handles[file].get_tensor(name)
        except Exception as e:
            raise ValueError(f"{file}: cannot read tensor {name!r} ({' '.join(str(e).split())})") from None
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"{file}: tensor {name!r} has shape {tuple(t.shape)}, config.json implies {tuple(shape)}"
            )
        return t

    entries = _entries(model)
    # the backbone was left uninitialised: every parameter must be filled from the checkpoint
    covered = {id(e.param) for e in entries}
    assert all(id(p) in covered for p in model.parameters()), "parameter without an HF mapping"
    with torch.no_grad():
        for e in entries:
            if e.names[0].startswith("score.") and e.names[0] not in files:
                continue  # LM checkpoint -> discriminator: keep the fresh head
            shard = e.split(*(read(n, s) for n, s in zip(e.names, e.shapes)))
            e.param.copy_(shard.to(e.param.dtype))
    return model


# ---- state dict / saving ----------------------------------------------------------------------


def _gather_tp(model: GadxModel, local: torch.Tensor) -> list[torch.Tensor]:
    if model.dims.tp == 1:
        return [local]
    shards = [torch.empty_like(local) for _ in range(model.dims.tp)]
    dist.all_gather(shards, local.detach().contiguous(), group=model.dims.tp_group)
    return shards


def _iter_hf(model: GadxModel):
    for e in _entries(model):
        if not e.save:
            continue
        for name, t in zip(e.names, e.merge(_gather_tp(model, e.param.detach()))):
            yield name, t


def hf_state_dict(model: GadxModel) -> dict[str, torch.Tensor]:
    """HF-named tensors held by this pipeline stage (full, TP-gathered).

    At TP=1 these are views of the parameters except q/k/v (split out of the fused QKV by a
    reshape that copies when there are several KV heads). Collective under TP: every TP rank
    must call it."""
    return dict(_iter_hf(model))


def save_pretrained(model: GadxModel, path, *, max_shard_bytes: int = 2 << 30) -> None:
    """Write an HF folder: config.json, safetensors (single file, or shards + index), and
    the tokenizer files of the folder the model was loaded from. Collective: all ranks call it."""
    from safetensors.torch import save_file

    dims = model.dims
    folder = Path(path)
    writer = dims.tp_rank == 0 and dims.dp_rank == 0
    stage = dims.pp_rank
    if writer:
        folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, tuple[str, int]] = {}  # HF name -> (file, bytes)
    part, part_bytes, n = {}, 0, 0

    def flush():
        nonlocal part, part_bytes, n
        if part:
            name = f"model-pp{stage:02d}-{n:05d}.safetensors"
            if writer:
                save_file({k: v.contiguous() for k, v in part.items()}, str(folder / name), metadata={"format": "pt"})
            written.update({k: (name, v.numel() * v.element_size()) for k, v in part.items()})
            part, part_bytes, n = {}, 0, n + 1

    for name, t in _iter_hf(model):
        if part and part_bytes + t.numel() * t.element_size() > max_shard_bytes:
            flush()
        part[name] = t
        part_bytes += t.numel() * t.element_size()
    flush()

    maps = [written]
    if dist.is_initialized() and dist.get_world_size() > 1:
        maps = [None] * dist.get_world_size()
        dist.all_gather_object(maps, written)
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()
        return
    merged = {k: v for m in maps for k, v in m.items()}
    weight_map = {k: f for k, (f, _) in merged.items()}
    files = sorted(set(weight_map.values()))
    if len(files) == 1:
        (folder / files[0]).rename(folder / "model.safetensors")
    else:
        index = {"metadata": {"total_size": sum(b for _, b in merged.values())}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    hf = model.config.to_hf_dict()
    hf["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    if model.head == "score":
        hf["gadx_head"] = "score"
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    source = getattr(model, "source_folder", None)
    if source is not None and Path(source).resolve() != folder.resolve():
        for f in TOKENIZER_FILES:
            if (Path(source) / f).is_file():
                shutil.copy2(Path(source) / f, folder / f)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
