"""Does a heal generalise? Students' samples on held-out prompts they never trained on, judged by the teacher.

    python tools/real_heal_eval.py --teacher TEACHER_DIR --prompts RUN/data/heldout_id.all.jsonl --out RUN/heal_eval \
        --model pruned=PRUNED_DIR --model kd=RUN/heal_kd/student_hf [--k 2] [--max-new-tokens 144]

For every model (and the teacher itself as the reference row): --k samples per prompt at the rollout
temperature (--temperature 0.8, seeded, up to --max-new-tokens), then
  teacher LL/tok   the teacher's log-likelihood per token of each sample (EOS counted when it finished),
                   mean over samples: word salad is ~ -7, the teacher's own samples ~ -1
  distinct-2       distinct bigrams / bigrams per sample, mean (repetition inflates log-likelihood)
  finished         the share of samples that end with EOS within the budget
  len              mean sample tokens
  CE               the model's cross-entropy per token on the teacher's replies to the same prompts (one
                   reply per prompt, sampled once at --teacher-temperature 0.7 up to --reply-cap tokens
                   and kept in OUT/teacher_replies.pt; EOS included when it finished)
Rows are cached by folder and weights (OUT/cache/NAME.json). Writes OUT/heal_eval.{md,json}.
Plain PyTorch, one process; OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_d_check import chunked, load_folder, read_prompts, reply_logprob  # noqa: E402

from gadx.real.text_metrics import distinct_n  # noqa: E402


def log(msg: str) -> None:
    print(f"[heal-eval {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sample(mc, sd, prompts, *, k: int, max_new_tokens: int, temperature: float, seed: int, batch: int):
    from gadx.sampler import KVCacheSampler

    eng = KVCacheSampler(mc, max_batch=batch, max_seq_len=max(map(len, prompts)) + max_new_tokens + 8)
    eng.load_weights(sd)
    flat = [p for p in prompts for _ in range(k)]
    S, fin = [], []
    for c in range(0, len(flat), batch):
        roll = eng.generate(flat[c:c + batch], max_new_tokens=max_new_tokens, temperature=temperature,
                            eos_ids=mc.eos_ids, seed=seed * 1000 + c)
        S += [list(r) for r in roll.responses]
        fin += list(roll.finished)
    return flat, S, fin


def per_token(mc, sd, prompts, replies) -> list[float]:
    lp = chunked(lambda P, R: reply_logprob(mc, sd, P, R, 1.0), prompts, replies)
    return [float(v) / max(len(r), 1) for v, r in zip(lp, replies)]


def main(argv=None) -> int:
    from gadx.train.sequences import encode_prompt

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--prompts", required=True, help="JSONL of held-out prompts (never trained on)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", action="append", default=[], help="NAME=HF_FOLDER (repeatable)")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=144)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--teacher-temperature", type=float, default=0.7)
    ap.add_argument("--reply-cap", type=int, default=128)
    ap.add_argument("--max-prompt-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="first N prompts (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    models = {}
    for spec in a.model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or name == "teacher":
            raise ValueError(f"--model {spec!r}: expected NAME=FOLDER with NAME != 'teacher'")
        models[name] = folder
    if a.k < 1 or a.max_new_tokens < 1 or a.reply_cap < 1:
        raise ValueError(f"--k {a.k}, --max-new-tokens {a.max_new_tokens}, --reply-cap {a.reply_cap} must be >= 1")
    out = Path(a.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    mt, tsd, tok = load_folder(Path(a.teacher))
    rows = read_prompts(Path(a.prompts))
    if a.limit:
        rows = rows[: a.limit]
    P = [encode_prompt(tok, r["messages"], a.max_prompt_len).ids for r in rows]

    ref_file = out / "teacher_replies.pt"
    ref_key = {"prompts": [r["id"] for r in rows], "cap": a.reply_cap, "T": a.teacher_temperature, "seed": a.seed}
    ref = torch.load(ref_file, weights_only=False) if ref_file.exists() else None
    if ref is None or ref["key"] != ref_key:
        _, R, fin = sample(mt, tsd, P, k=1, max_new_tokens=a.reply_cap, temperature=a.teacher_temperature,
                           seed=a.seed + 1, batch=a.batch)
        ref = {"key": ref_key, "replies": R, "finished": fin}
        torch.save(ref, ref_file)
        log(f"teacher replies: {len(R)} ({sum(fin)} finished)")

    results = {"args": vars(a), "n_prompts": len(rows), "rows": {}}
    for name, folder in {**models, "teacher": a.teacher}.items():
        w = Path(folder) / "model.safetensors"
        key = {"folder": str(Path(folder).resolve()), "weights": [w.stat().st_size, w.stat().st_mtime_ns],
               **{k: getattr(a, k) for k in ("k", "max_new_tokens", "temperature", "seed")}, **ref_key}
        cache = out / "cache" / f"{name}.json"
        if cache.is_file() and json.loads(cache.read_text())["key"] == key:
            results["rows"][name] = json.loads(cache.read_text())["row"]
            log(f"{name}: cached")
            continue
        t0 = time.perf_counter()
        mc, sd, _ = (mt, tsd, tok) if name == "teacher" else load_folder(Path(folder))
        if mc.vocab_size != mt.vocab_size:
            raise ValueError(f"{name}: vocab {mc.vocab_size} != the teacher's {mt.vocab_size}")
        flat, S, fin = sample(mc, sd, P, k=a.k, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                              seed=a.seed, batch=a.batch)
        keep = [i for i, s in enumerate(S) if s]
        t_ll = per_token(mt, tsd, [flat[i] for i in keep], [S[i] for i in keep])
        ce = -sum(v * len(r) for v, r in zip(per_token(mc, sd, P, ref["replies"]), ref["replies"])) \
            / sum(len(r) for r in ref["replies"])
        body = [s[:-1] if f else s for s, f in zip(S, fin)]  # text tokens: EOS is no bigram
        row = {"teacher_ll_per_token": sum(t_ll) / len(t_ll), "distinct2": distinct_n(body, 2),
               "finished": sum(fin) / len(fin), "len_mean": sum(map(len, S)) / len(S), "ce_teacher_replies": ce,
               "n_samples": len(S), "wall_s": time.perf_counter() - t0,
               "examples": [tok.decode(b, skip_special_tokens=True) for b in body[: 2 * a.k: a.k]]}
        results["rows"][name] = row
        cache.write_text(json.dumps({"key": key, "row": row}, ensure_ascii=False))
        log(f"{name}: teacher LL/tok {row['teacher_ll_per_token']:.3f}  distinct-2 {row['distinct2']:.3f}  "
            f"finished {row['finished']:.2f}  len {row['len_mean']:.1f}  CE {ce:.3f}  ({row['wall_s']:.0f} s)")
    results["wall_s"] = time.perf_counter() - t_start
    (out / "heal_eval.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    lines = [f"Held-out prompts: {len(rows)} ({a.prompts}); {a.k} samples each at T = {a.temperature}, up to "
             f"{a.max_new_tokens} tokens; CE on the teacher's replies (T = {a.teacher_temperature}, cap {a.reply_cap})", "",
             "| model | teacher LL/tok ↑ | distinct-2 ↑ | finished | len | CE on teacher replies ↓ |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results["rows"].items():
        lines.append(f"| {name} | {r['teacher_ll_per_token']:.3f} | {r['distinct2']:.3f} | {r['finished']:.2f} | "
                     f"{r['len_mean']:.1f} | {r['ce_teacher_replies']:.3f} |")
    (out / "heal_eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        print(f"real_heal_eval: error: {e}", file=sys.stderr)
        sys.exit(2)
