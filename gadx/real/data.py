"""Prompt sets of the real-LLM run, written into a run folder from the suites shipped in gadx/data/eval.

    from gadx.real.data import selfinst_split, write_prompt_files
    train, held = selfinst_split(n_train=200, seed=0)   # 200 / 52 of the 252 Self-Instruct prompts
    files = write_prompt_files("runs/smollm2/data", tokenizer=tok, max_prompt_len=128)
    # files["train"]: JSONL {"id", "messages"} the trainer reads (data.train)
    # files["heldout_id"], files["ood_vicuna"], files["ood_mtbench"]: evaluation prompts

The split is a seeded shuffle of the Self-Instruct ids, so it is the same on every
machine and independent of the tokenizer. The trainer cuts over-long prompts on the
right, which would cut off the chat template's generation prompt; so training
prompts whose rendered length exceeds ``max_prompt_len`` are left out of the train
file (never moved to another split). Evaluation files keep every prompt.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from gadx.eval.suites import EvalPrompt, load_suite

SELFINST_SIZE = 252
EVAL_SETS = {"heldout_id": None, "ood_vicuna": "vicuna", "ood_mtbench": "mtbench"}


def selfinst_split(n_train: int = 200, seed: int = 0) -> tuple[list[EvalPrompt], list[EvalPrompt]]:
    """(train, held-out) Self-Instruct prompts: a seeded shuffle, held-out keeps the suite's order."""
    prompts = load_suite("selfinst").prompts
    if not 0 < n_train < len(prompts):
        raise ValueError(f"n_train={n_train} must be in [1, {len(prompts) - 1}]")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    train_idx = set(order[:n_train])
    train = [prompts[i] for i in order[:n_train]]
    held = [p for i, p in enumerate(prompts) if i not in train_idx]
    return train, held


def _write_jsonl(path: Path, prompts: list[EvalPrompt]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"id": p.id, "messages": p.messages}, ensure_ascii=False) + "\n")
    return path


def write_prompt_files(out_dir: str | Path, *, tokenizer=None, max_prompt_len: int = 0, n_train: int = 200,
                       seed: int = 0) -> dict[str, Path]:
    """Write train.jsonl, heldout_id.jsonl, ood_vicuna.jsonl, ood_mtbench.jsonl (+ split.json) into ``out_dir``.

    ``tokenizer`` and ``max_prompt_len`` > 0: drop training prompts longer than that once rendered.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, held = selfinst_split(n_train, seed)
    dropped: list[str] = []
    if max_prompt_len > 0:
        if tokenizer is None:
            raise ValueError("max_prompt_len > 0 needs the student's tokenizer")
        keep = [len(tokenizer.encode_chat(p.messages, add_generation_prompt=True)) <= max_prompt_len for p in train]
        dropped = [p.id for p, k in zip(train, keep) if not k]
        train = [p for p, k in zip(train, keep) if k]
    files = {"train": _write_jsonl(out / "train.jsonl", train),
             "heldout_id": _write_jsonl(out / "heldout_id.jsonl", held)}
    for name, suite in EVAL_SETS.items():
        if suite is not None:
            files[name] = _write_jsonl(out / f"{name}.jsonl", load_suite(suite).prompts)
    (out / "split.json").write_text(json.dumps({
        "seed": seed, "n_train": n_train, "max_prompt_len": max_prompt_len,
        "train_ids": [p.id for p in train], "dropped_too_long": dropped, "heldout_ids": [p.id for p in held],
    }, indent=1))
    return files
