"""Synthetic heal data from the teacher (issue 20): Magpie-style user prompts, then the teacher's replies.

    python tools/real_synth.py --teacher TEACHER_DIR --out RUN/data/synth.jsonl [--n 2400] [--reply-cap 128]

1. ``--n`` user turns sampled from the teacher's chat template cut where a user's words begin
   (gadx.real.synth_prompts.user_turn_prefix), at ``--prompt-temperature`` (1.0), up to
   ``--prompt-max-tokens`` tokens; kept when they ended, hold no special token, have >= ``--min-words``
   words, fit ``--max-prompt-len`` tokens as a prompt, are new, and are not (nearly) an evaluation prompt
   (every Self-Instruct, Vicuna and MT-bench user turn); ``--max-prompts`` keeps the first N of them.
2. The teacher's reply to each kept prompt at ``--reply-temperature`` (0.7, the trainer's teacher
   temperature), up to ``--reply-cap`` tokens (EOS counted), sampled locally with the KV-cache sampler
   (the heal may read the teacher's weights; the arms never do).

Writes OUT.prompts.json (the kept prompts, before the replies: a stopped run restarts from them), OUT
(JSONL: id, messages, reply text, reply_ids with EOS when it finished, finished) and OUT.json (the
filter's counts, the settings, the wall time). Skips everything when OUT exists, unless
``--force``. One process, plain PyTorch; OMP_NUM_THREADS=1 leaves the other core to others.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_d_check import load_folder  # noqa: E402


def log(msg: str) -> None:
    print(f"[synth {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    from gadx.real.synth_prompts import (eval_prompt_texts, filter_prompts, sample_replies, sample_user_turns,
                                         user_turn_prefix)
    from gadx.sampler import KVCacheSampler

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the teacher's HF folder")
    ap.add_argument("--out", required=True, help="the JSONL to write (e.g. RUN/data/synth.jsonl)")
    ap.add_argument("--n", type=int, default=2400, help="user turns to sample (about half survive the filter)")
    ap.add_argument("--prompt-temperature", type=float, default=1.0)
    ap.add_argument("--prompt-max-tokens", type=int, default=64)
    ap.add_argument("--min-words", type=int, default=3)
    ap.add_argument("--max-prompt-len", type=int, default=128)
    ap.add_argument("--near-jaccard", type=float, default=0.5)
    ap.add_argument("--max-prompts", type=int, default=0, help="reply to the first N kept prompts only (0 = all)")
    ap.add_argument("--reply-temperature", type=float, default=0.7)
    ap.add_argument("--reply-cap", type=int, default=128, help="max reply tokens (EOS included)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-eval-filter", action="store_true", help="skip the evaluation-prompt filter (tests)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.is_file() and not a.force:
        log(f"{out} exists: skipped (--force to redo)")
        return 0
    t0 = time.perf_counter()
    mc, sd, tok = load_folder(Path(a.teacher))
    eng = KVCacheSampler(mc, max_batch=a.batch, max_seq_len=a.max_prompt_len + max(a.reply_cap, a.prompt_max_tokens) + 8)
    eng.load_weights(sd)
    prefix = user_turn_prefix(tok)
    # the kept prompts are saved before the (longer) reply sampling, so a stopped run restarts from them
    stage = out.with_name(out.name + ".prompts.json")
    key = {k: getattr(a, k) for k in ("teacher", "n", "prompt_temperature", "prompt_max_tokens", "min_words",
                                      "max_prompt_len", "near_jaccard", "batch", "seed", "no_eval_filter")}
    saved = json.loads(stage.read_text()) if stage.is_file() else None
    if saved is not None and saved["key"] == key:
        kept, counts = saved["kept"], saved["counts"]
        log(f"reusing the {len(kept)} prompts of {stage}")
    else:
        raw = sample_user_turns(eng, prefix, n=a.n, eos_ids=mc.eos_ids, temperature=a.prompt_temperature,
                                max_new_tokens=a.prompt_max_tokens, batch=a.batch, seed=a.seed, log=log)
        kept, counts = filter_prompts(raw, tokenizer=tok, avoid=() if a.no_eval_filter else eval_prompt_texts(),
                                      max_prompt_len=a.max_prompt_len, min_words=a.min_words, near_jaccard=a.near_jaccard)
        out.parent.mkdir(parents=True, exist_ok=True)
        stage.write_text(json.dumps({"key": key, "counts": counts, "kept": kept}, ensure_ascii=False))
    t_prompts = time.perf_counter() - t0
    log(f"filter: {counts}")
    if a.max_prompts > 0 and len(kept) > a.max_prompts:
        kept = kept[: a.max_prompts]
        log(f"replying to the first {a.max_prompts} kept prompts (--max-prompts)")
    if not kept:
        raise ValueError(f"no synthetic prompt survived the filter: {counts}")
    replies = sample_replies(eng, tok, kept, eos_ids=mc.eos_ids, temperature=a.reply_temperature,
                             max_new_tokens=a.reply_cap, max_prompt_len=a.max_prompt_len, batch=a.batch,
                             seed=a.seed + 1, log=log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i, (text, (ids, fin)) in enumerate(zip(kept, replies)):
            body = ids[:-1] if fin else ids
            f.write(json.dumps({"id": f"synth-{i:05d}", "messages": [{"role": "user", "content": text}],
                                "reply": tok.decode(body, skip_special_tokens=True), "reply_ids": ids,
                                "finished": fin}, ensure_ascii=False) + "\n")
    tmp.rename(out)
    wall = time.perf_counter() - t0
    summary = {"counts": counts, "replies_finished": sum(f for _, f in replies), "prompt_prefix": tok.decode(prefix, skip_special_tokens=False),
               "settings": {k: v for k, v in vars(a).items() if k != "force"},
               "wall_s": {"prompts": t_prompts, "total": wall}}
    out.with_name(out.name + ".json").write_text(json.dumps(summary, indent=1))
    log(f"wrote {len(kept)} prompts + replies ({summary['replies_finished']} finished) to {out} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        print(f"real_synth: error: {e}", file=sys.stderr)
        sys.exit(2)
