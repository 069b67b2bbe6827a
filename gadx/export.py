"""``gadx export``: a trainer checkpoint (any TP/PP layout) -> a Hugging Face safetensors folder.

    gadx export runs/embedded/gad/checkpoints/step-000040 out/student_hf
    gadx export runs/embedded/gad/checkpoints out/d_hf --model D          # the latest; the discriminator
    # then: AutoModelForCausalLM.from_pretrained("out/student_hf"), AutoTokenizer.from_pretrained(...)

The checkpoint's ``dist/`` folder holds global tensors (megatron's distributed format,
gadx/train/checkpoint.py), so one process rebuilds the model at TP=1, PP=1 whatever layout
the run trained at, loads it and writes ``config.json`` + ``model.safetensors`` (gadx.models
save_pretrained) and a tokenizer folder that transformers' AutoTokenizer encodes exactly as
gadx does (gadx.tokenizer.save_hf_tokenizer). Only the named model is read; the other
models and the optimizer states in the checkpoint are left alone.

The tokenizer is the run's: ``--tokenizer``, else the checkpoint config's ``model.tokenizer``
or ``model.student`` folder, else the embedded run's ``<run.out_dir>/tokenizer`` (also looked
for next to the checkpoint, if the run folder moved).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

MODELS = {"G": "lm", "ref": "lm", "D": "score"}  # checkpoint name -> head
EMBEDDED = "embedded"


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``step-N`` folder, a ``checkpoints`` folder (its ``latest``), or the run folder holding ``checkpoints/``."""
    path = Path(path)
    for cand in (path, path / "checkpoints"):
        if (cand / "dist").is_dir() and (cand / "meta.json").is_file():
            return cand
        if (cand / "latest").is_file():
            step = cand / (cand / "latest").read_text().strip()
            if (step / "dist").is_dir():
                return step
    raise ValueError(f"{path}: not a gadx trainer checkpoint (no dist/ and meta.json, nor a checkpoints "
                     "folder with a 'latest' file)")


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "tokenizer.json").is_file() or any(folder.glob("*.model")))


def find_tokenizer(ckpt: Path, run_config: dict) -> Path:
    m = run_config.get("model", {})
    out_dir = run_config.get("run", {}).get("out_dir", "")
    cands = [m.get("tokenizer") or "", m.get("student") if m.get("student") != EMBEDDED else "",
             str(Path(out_dir) / "tokenizer") if out_dir else "", str(ckpt.resolve().parents[2] / "tokenizer")]
    for c in cands:
        if c and _has_tokenizer(Path(c)):
            return Path(c)
    looked = ", ".join(c for c in cands if c)
    raise ValueError(f"{ckpt}: no tokenizer found (looked in {looked}); pass --tokenizer FOLDER")


def export(checkpoint: str | Path, out_dir: str | Path, *, model: str = "G", tokenizer: str | Path | None = None,
           dtype: str | None = None) -> Path:
    """Write ``out_dir`` from the checkpoint's ``model`` (G, D or ref); returns the checkpoint step folder used."""
    from gadx.models import ModelConfig, build_model, save_pretrained
    from gadx.parallel import destroy_parallel, init_parallel
    from gadx.parallel.dist_ckpt import EXTRA_FILE, load_sharded
    from gadx.tokenizer import check_vocab, load_tokenizer, save_hf_tokenizer

    if model not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS)}, got {model!r}")
    if dtype is not None and dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    ckpt = resolve_checkpoint(checkpoint)
    meta = json.loads((ckpt / "dist" / EXTRA_FILE).read_text())
    if model not in meta["models"]:
        raise ValueError(f"{ckpt}: holds models {meta['models']}, not {model!r}")
    run_config = json.loads((ckpt / "config.json").read_text()) if (ckpt / "config.json").is_file() else {}
    tok = load_tokenizer(tokenizer if tokenizer is not None else find_tokenizer(ckpt, run_config))
    cfg = ModelConfig.from_hf_dict(meta["configs"][model], source=f"{ckpt}/dist/{EXTRA_FILE}")
    check_vocab(tok, cfg.vocab_size, model_source=str(ckpt))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: output folder is not empty")
    saved_dtype = getattr(torch, run_config.get("model", {}).get("dtype", "float32"))
    dims = init_parallel(1, 1)
    try:
        implicit_d = model == "D" and run_config.get("discriminator", {}).get("kind") == "implicit"  # a whole LM
        net = build_model(cfg, head="lm" if implicit_d else MODELS[model], parallel=dims, dtype=saved_dtype)
        load_sharded(ckpt / "dist", {model: net})
        if dtype is not None:
            net.to(getattr(torch, dtype))
        save_pretrained(net, out)
    finally:
        destroy_parallel()
    save_hf_tokenizer(tok, out)
    return ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gadx export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a checkpoints/step-N folder, a checkpoints folder (its latest), "
                                       "or the run folder holding checkpoints/ (e.g. runs/embedded/gad)")
    ap.add_argument("out_dir", help="the HF folder to write (absent or empty)")
    ap.add_argument("--model", default="G", help="G (student, default), D (discriminator, score head) or ref")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the run's, from the checkpoint's config)")
    ap.add_argument("--dtype", help="cast the weights: float32, bfloat16 or float16 (default: as trained)")
    args = ap.parse_args(argv)
    try:
        ckpt = export(args.checkpoint, args.out_dir, model=args.model, tokenizer=args.tokenizer, dtype=args.dtype)
    except ValueError as e:
        print(f"gadx export: {e}", file=sys.stderr)
        return 2
    print(f"gadx export: {ckpt} ({args.model}) -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
