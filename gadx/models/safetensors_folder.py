"""Reading an HF folder's safetensors weights: the one reader for the model layer
(gadx.models.hf_io, tensor by tensor into a TP/PP shard) and the sampler (gadx.sampler.loading,
the whole state dict).

    files = weight_files(folder)        # {HF name: file}, from model.safetensors.index.json or model.safetensors
    with open_safetensors(file) as f:   # safe_open, with a ValueError naming the file
        t = f.get_tensor(name)
    sd = load_safetensors(folder)       # {HF name: tensor}, every tensor

Every failure is a one-line ValueError naming the file: safetensors' own errors name neither file
nor folder. Pickled weights (.bin/.pt/...) are refused, never loaded (a pickle is code). No megatron
here: the sampler imports it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def open_safetensors(file: Path):
    """``safe_open`` with a one-line ValueError naming the file when it is corrupt or truncated
    (safetensors' own error names neither the file nor the folder)."""
    from safetensors import safe_open

    try:
        return safe_open(file, framework="pt")
    except Exception as e:  # SafetensorError (a bare Exception subclass in older releases), OSError
        raise ValueError(f"{file}: not a readable safetensors file ({' '.join(str(e).split())})") from None


def weight_files(folder: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file, from the index or the single file."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    single = folder / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: malformed safetensors index ({e!r})") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: malformed safetensors index (weight_map is a {type(weight_map).__name__})")
        return {name: folder / f for name, f in weight_map.items()}
    if single.is_file():
        with open_safetensors(single) as f:
            return {name: single for name in f.keys()}
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
    if pickled:
        raise ValueError(
            f"{folder}: found pickled weights {pickled}; gadx loads safetensors only "
            "(convert with transformers: model.save_pretrained(out, safe_serialization=True))"
        )
    raise ValueError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def load_safetensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every HF-named tensor of the folder (``model.safetensors`` or the shards of its index)."""
    by_file: dict[Path, list[str]] = {}
    for name, file in weight_files(Path(folder)).items():
        by_file.setdefault(file, []).append(name)
    state: dict[str, torch.Tensor] = {}
    for file, names in by_file.items():
        if not file.is_file():
            raise ValueError(f"{file}: listed in the index but not found")
        with open_safetensors(file) as f:
            for name in names:
                try:
                    state[name] = f.get_tensor(name)
                except Exception as e:  # a name the index lists but the file lacks, a torn file
                    raise ValueError(f"{file}: cannot read tensor {name!r} ({' '.join(str(e).split())})") from None
    return state
