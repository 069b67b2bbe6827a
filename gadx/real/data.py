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


# --- replies that end (issue 20, item 1) -------------------------------------------------------------
# On Vicuna every teacher reply hit the 128-token cap, so D never saw an end-of-reply cue and the
# "teacher" side of a pair was a cut-off text. The run keeps only prompts whose teacher reply
# finishes within the cap, EOS included, on every set (training, D's held-out, evaluation).

PROMPT_SETS = ("train", "heldout_id", "ood_vicuna", "ood_mtbench")


def reply_ends(tokenizer, text: str, finish_reason: str | None, max_reply_tokens: int) -> bool:
    """True when the teacher stopped by itself and its reply, EOS appended, fits ``max_reply_tokens``
    (the trainer's encode_teacher_reply would then keep the EOS)."""
    if finish_reason != "stop":
        return False
    return len(tokenizer.encode(text, add_special_tokens=False)) + 1 <= max_reply_tokens


def keep_ended_prompts(data_dir: str | Path, reply_fn, *, tokenizer, max_reply_tokens: int,
                       sets: tuple[str, ...] = PROMPT_SETS) -> dict[str, dict]:
    """Rewrite ``data_dir``'s prompt files to the prompts whose teacher reply ends (``reply_ends``).

    ``reply_fn(list of messages) -> list of (text, finish_reason)``: the teacher's reply to each prompt,
    e.g. ``teacher_reply_fn`` (the reply the trainer's teacher API returns, from its cache). The first
    call saves each file as ``NAME.all.jsonl`` and always filters from that copy, so calling it again
    (another cap, another run) never filters twice. Writes ``ended.json`` (counts, dropped ids) and
    returns ``{set: {"kept": n, "total": n, "dropped": [ids]}}``.
    """
    if max_reply_tokens < 2:
        raise ValueError(f"max_reply_tokens={max_reply_tokens} leaves no room for a reply and its EOS")
    data_dir = Path(data_dir)
    summary: dict[str, dict] = {}
    for name in sets:
        path, full = data_dir / f"{name}.jsonl", data_dir / f"{name}.all.jsonl"
        if not full.exists():
            if not path.exists():
                raise ValueError(f"{path} not found: write the prompt files first (write_prompt_files)")
            full.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        rows = [json.loads(x) for x in full.read_text(encoding="utf-8").splitlines() if x.strip()]
        replies = reply_fn([r["messages"] for r in rows])
        if len(replies) != len(rows):
            raise ValueError(f"reply_fn returned {len(replies)} replies for {len(rows)} prompts of {name}")
        ok = [reply_ends(tokenizer, text, fin, max_reply_tokens) for text, fin in replies]
        with path.open("w", encoding="utf-8") as f:
            for r, k in zip(rows, ok):
                if k:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        summary[name] = {"kept": sum(ok), "total": len(rows), "dropped": [r["id"] for r, k in zip(rows, ok) if not k]}
    (data_dir / "ended.json").write_text(json.dumps({"max_reply_tokens": max_reply_tokens, "sets": summary}, indent=1))
    return summary


def teacher_reply_fn(client, *, temperature: float, max_tokens: int, seed: int | None):
    """A ``reply_fn`` asking ``client`` (a gadx.teacher.TeacherClient) exactly as the trainer does
    (gadx.train.teacher_link: messages, temperature, max_tokens, seed), so the replies land in, or
    come from, the same cache entries the trainer and the D check read."""

    def replies(messages_list):
        futs = [client.submit(m, temperature=temperature, max_tokens=max_tokens, seed=seed) for m in messages_list]
        out = []
        for f in futs:
            r = f.result()
            out.append((r.text, r.finish_reason))
        return out

    return replies
