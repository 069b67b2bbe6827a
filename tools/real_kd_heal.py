"""Heal the pruned SmolLM2 student by knowledge distillation on the teacher's full next-token distribution.

    python tools/real_kd_heal.py --student PRUNED_DIR --teacher TEACHER_DIR --data RUN/data/synth.jsonl \
        --out RUN/heal_kd [--steps 200] [--batch 8] [--lr 3e-4] [--ce-weight 0] [--max-minutes 60]

Data: the synthetic prompts and the teacher's sampled replies of tools/real_synth.py (never the
evaluation prompts). Each step takes --batch (prompt, reply) rows in a seeded order, runs the teacher
(frozen, no grad) and the student over prompt + reply, and minimises the mean over the reply's
positions of KL(teacher || student) (gadx.real.kd.kd_loss; + --ce-weight x CE on the reply's tokens),
AdamW, linear warmup then cosine to 0.1 x lr, gradient norm clipped at 1.

This reads the teacher's weights: it only builds the student checkpoint both arms start from (a stand-in
for the paper's independently trained instruct student). The arms see only the teacher's text.

Every --eval-every steps: KL and CE on --held rows split off the end of the data (never trained on).
Writes OUT/student_hf (an HF folder: the student's config and tokenizer files, the new weights; saved
every --save-every steps and at the end, so a stopped run leaves its last checkpoint), OUT/metrics.jsonl
(one line per step), OUT/heal.json (settings, wall). Stops at --steps or after --max-minutes.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d_curve import _pad, hidden  # noqa: E402
from real_d_check import load_folder  # noqa: E402

from gadx.real.kd import cosine_lr, kd_loss  # noqa: E402


def log(msg: str) -> None:
    print(f"[kd-heal {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def read_rows(path: Path, tok, max_prompt_len: int, max_response_len: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids as the trainer renders them, reply ids cut at max_response_len) of each JSONL row."""
    from gadx.train.sequences import encode_prompt

    if not path.is_file():
        raise ValueError(f"{path} not found: write it with tools/real_synth.py first")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            reply = list(r["reply_ids"])[:max_response_len]
            if reply:
                rows.append((encode_prompt(tok, r["messages"], max_prompt_len).ids, reply))
    if not rows:
        raise ValueError(f"{path} holds no (prompt, reply) rows")
    return rows


def reply_logits(mc, sd, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, V] at the positions that predict each reply token, and those tokens [N]."""
    ids, _ = _pad([list(p) + list(r) for p, r in batch], 0)
    h_BTH = hidden(mc, sd, ids)
    rows, pos, tgt = [], [], []
    for i, (p, r) in enumerate(batch):
        rows += [i] * len(r)
        pos += range(len(p) - 1, len(p) + len(r) - 1)  # position j predicts token j + 1
        tgt += list(r)
    return F.linear(h_BTH[torch.tensor(rows), torch.tensor(pos)], sd["lm_head.weight"]), torch.tensor(tgt)


def save_folder(src: Path, dst: Path, theta: dict, tied: bool) -> None:
    """An HF folder: every non-weight file of ``src`` (config, tokenizer, chat template) + the new weights."""
    from safetensors.torch import save_file

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy2(f, tmp / f.name)
    state = {k: v.detach().contiguous().clone() for k, v in theta.items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def evaluate(mc_s, theta, mc_t, tsd, rows, batch: int) -> dict:
    kl = ce = 0.0
    n = 0
    with torch.no_grad():
        for c in range(0, len(rows), batch):
            b = rows[c:c + batch]
            s_NV, tgt = reply_logits(mc_s, theta, b)
            t_NV, _ = reply_logits(mc_t, tsd, b)
            _, st = kd_loss(s_NV, t_NV, tgt)
            kl += st["kl"] * len(tgt)
            ce += st["ce"] * len(tgt)
            n += len(tgt)
    return {"held_kl": kl / n, "held_ce": ce / n}


def main(argv=None) -> int:
    from gadx.tokenizer import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="the pruned student's HF folder")
    ap.add_argument("--teacher", required=True, help="the teacher's HF folder")
    ap.add_argument("--data", required=True, help="synth.jsonl of tools/real_synth.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8, help="(prompt, reply) rows per step")
    ap.add_argument("--micro", type=int, default=4, help="rows per forward/backward (memory)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--ce-weight", type=float, default=0.0)
    ap.add_argument("--max-prompt-len", type=int, default=128)
    ap.add_argument("--max-response-len", type=int, default=128)
    ap.add_argument("--held", type=int, default=32, help="rows split off the end of the data for the held-out KL/CE")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop (and save) after this long; 0 = no limit")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for name in ("steps", "batch", "micro", "max_prompt_len", "max_response_len", "eval_every", "save_every"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.held < 0:
        raise ValueError(f"--held must be >= 0, got {a.held}")
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    mc_s, ssd, tok = load_folder(Path(a.student))
    mc_t, tsd, _ = load_folder(Path(a.teacher))
    if mc_s.vocab_size != mc_t.vocab_size:
        raise ValueError(f"student vocab {mc_s.vocab_size} != teacher vocab {mc_t.vocab_size}: KD needs one vocabulary")
    for v in tsd.values():
        v.requires_grad_(False)
    rows = read_rows(Path(a.data), load_tokenizer(a.student), a.max_prompt_len, a.max_response_len)
    if a.held >= len(rows):
        raise ValueError(f"--held {a.held} leaves no training rows of {len(rows)}")
    train, held = rows[: len(rows) - a.held], rows[len(rows) - a.held:]
    tied = ssd["lm_head.weight"] is ssd["model.embed_tokens.weight"]
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in ssd.items()}
    if tied:
        theta["lm_head.weight"] = theta["model.embed_tokens.weight"]
    params = list({id(v): v for v in theta.values()}.values())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    rng = random.Random(a.seed)
    order: list[int] = []
    metrics = (out / "metrics.jsonl").open("w")
    log(f"{len(train)} training rows, {len(held)} held-out; {a.steps} steps x {a.batch}")
    if held:
        ev = evaluate(mc_s, theta, mc_t, tsd, held, a.micro)
        log(f"step 0: held-out KL {ev['held_kl']:.3f} CE {ev['held_ce']:.3f}")
        metrics.write(json.dumps({"step": 0, **ev}) + "\n")
    step = 0
    for step in range(1, a.steps + 1):
        t = time.perf_counter()
        lr = cosine_lr(step - 1, steps=a.steps, peak=a.lr, warmup=a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        if len(order) < a.batch:
            fresh = list(range(len(train)))
            rng.shuffle(fresh)
            order += fresh
        batch = [train[i] for i in order[: a.batch]]
        del order[: a.batch]
        n_tok = sum(len(r) for _, r in batch)
        opt.zero_grad()
        kl = ce = 0.0
        for m in range(0, len(batch), a.micro):
            mb = batch[m:m + a.micro]
            with torch.no_grad():
                t_NV, _ = reply_logits(mc_t, tsd, mb)
            s_NV, tgt = reply_logits(mc_s, theta, mb)
            loss, st = kd_loss(s_NV, t_NV, tgt, ce_weight=a.ce_weight)
            w = len(tgt) / n_tok  # every reply token weighs the same across micro-batches
            (loss * w).backward()
            kl += st["kl"] * w
            ce += st["ce"] * w
        gn = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        rec = {"step": step, "lr": lr, "kl": kl, "ce": ce, "grad_norm": gn, "tokens": n_tok,
               "step_s": time.perf_counter() - t}
        if held and (step % a.eval_every == 0 or step == a.steps):
            rec.update(evaluate(mc_s, theta, mc_t, tsd, held, a.micro))
        metrics.write(json.dumps(rec) + "\n")
        metrics.flush()
        log(f"step {step}/{a.steps}: KL {kl:.3f} CE {ce:.3f} lr {lr:.2e} |g| {gn:.2f} {rec['step_s']:.1f} s"
            + (f"; held-out KL {rec['held_kl']:.3f} CE {rec['held_ce']:.3f}" if "held_kl" in rec else ""))
        over = a.max_minutes > 0 and time.perf_counter() - t0 > 60 * a.max_minutes
        if step % a.save_every == 0 or step == a.steps or over:
            save_folder(Path(a.student), out / "student_hf", theta, tied)
        if over:
            log(f"--max-minutes {a.max_minutes} reached after step {step}: stopped (saved)")
            break
    metrics.close()
    wall = time.perf_counter() - t0
    (out / "heal.json").write_text(json.dumps({"args": vars(a), "steps_done": step, "wall_s": wall,
                                               "n_train": len(train), "n_held": len(held)}, indent=1))
    log(f"done: {step} steps in {wall:.0f} s -> {out / 'student_hf'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        print(f"real_kd_heal: error: {e}", file=sys.stderr)
        sys.exit(2)
