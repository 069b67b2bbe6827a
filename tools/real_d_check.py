"""The D check before any GAD run on SmolLM2 (issue 20, item 2): can a discriminator tell the teacher's
replies from the healed student's samples, on prompts it never trained on?

    python tools/real_d_check.py --student RUN/heal/seqkd/student_hf --teacher TEACHER_DIR --data RUN/data \
        --base-url http://127.0.0.1:8011/v1 --cache RUN/teacher_cache.sqlite --out RUN/d_check \
        [--k 4] [--held-k 4] [--d-kind implicit|head] [--lr 1e-4] [--batch 16]

1. Teacher replies: one per prompt of train.jsonl and heldout_id.jsonl, asked exactly as the trainer asks
   (recipes/smollm2_common.toml's [teacher]: temperature, max_tokens, seed; the same cache), so the D
   check sees the replies GAD would see. Encoded as the trainer does: text, then EOS, cut at
   --max-response-len.
2. Student samples: --k per training prompt and --held-k per held-out prompt, from the healed student
   at the rollout temperature (--temperature, up to --max-response-len new tokens).
3. D trained offline, one Bradley-Terry pass over the (teacher reply, student sample) training pairs in
   a seeded order, --batch pairs an update:
     implicit  D(x, y) = beta * [log P_theta(y|x) - log S(y|x)] at the rollout temperature, summed over
               the reply; P_theta a trainable copy of the student, LM head included, S the frozen
               student (tools/implicit_d.py; the D that learned on the embedded world)
     head      the trainer's D: the student's trunk (trainable copy) + a fresh scalar head read at the
               reply's last token
4. After 0, 32, 64, 128, ... training pairs and at the end: D's pairwise accuracy on ALL held-out pairs
   (ties and identical replies 1/2; standard error clustered by prompt), and the Spearman correlation
   between D's score of the held-out student samples and the teacher's log-likelihood per token of
   those samples (a diagnostic: the only place the teacher's weights are read; EOS counted when the
   sample finished).

Writes OUT/pairs.pt (teacher replies and samples: reused by a second run, e.g. --d-kind head),
OUT/d_check_<kind>.json (the curve, the settings, the counts) after every checkpoint, and
OUT/d_check_<kind>.md (the table). Plain PyTorch on HF-named tensors, one process; OMP_NUM_THREADS=1-2.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d_curve import _pad, hidden  # noqa: E402

from gadx.real.d_metrics import pairwise_accuracy, spearman  # noqa: E402


def log(msg: str) -> None:
    print(f"[d-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_folder(folder: Path):
    """(ModelConfig, HF-named fp32 tensors with lm_head, tokenizer) of an HF folder."""
    from safetensors.torch import load_file

    from gadx.models import ModelConfig
    from gadx.tokenizer import load_tokenizer

    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"{folder} has no model.safetensors (an HF folder of gadx.real.smollm2 or the trainer)")
    sd = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
    return ModelConfig.from_pretrained(folder), sd, load_tokenizer(folder)


def reply_logprob(mc, sd, prompts, replies, temperature: float) -> torch.Tensor:
    """Sum over each reply's tokens of log softmax(logits / temperature) [B] (differentiable in sd). The
    LM head is applied at the reply's positions only: the prompt's logits are never needed."""
    ids, _ = _pad([list(p) + list(r) for p, r in zip(prompts, replies)], 0)
    h_BTH = hidden(mc, sd, ids)
    rows, pos, tgt = [], [], []
    for i, (p, r) in enumerate(zip(prompts, replies)):
        n = len(r)
        rows += [i] * n
        pos += range(len(p) - 1, len(p) + n - 1)  # position j predicts token j + 1
        tgt += list(r)
    logits_NV = F.linear(h_BTH[torch.tensor(rows), torch.tensor(pos)], sd["lm_head.weight"]) / temperature
    tok_N = -F.cross_entropy(logits_NV.float(), torch.tensor(tgt), reduction="none")
    return torch.zeros(len(prompts), dtype=tok_N.dtype).index_add(0, torch.tensor(rows), tok_N)


def chunked(fn, prompts, replies, chunk: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(prompts[c:c + chunk], replies[c:c + chunk]) for c in range(0, len(prompts), chunk)]) \
            if prompts else torch.zeros(0)


def read_prompts(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path} not found: write the prompt files first (tools/real_run.sh step 1)")
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    return rows


def teacher_replies(rows, a) -> list[tuple[str, str | None]]:
    from gadx.real.data import teacher_reply_fn
    from gadx.teacher import TeacherClient

    with TeacherClient(a.base_url, a.model_name, cache_path=a.cache) as client:
        fn = teacher_reply_fn(client, temperature=a.teacher_temperature, max_tokens=a.teacher_max_tokens,
                              seed=a.teacher_seed)
        return fn([r["messages"] for r in rows])


def make_pairs(a, mc, sd, tok) -> dict:
    """Teacher replies and student samples for the training and held-out prompts (tokens)."""
    from gadx.sampler import KVCacheSampler
    from gadx.train.sequences import encode_prompt, encode_teacher_reply

    eng = KVCacheSampler(mc, max_batch=a.gen_batch, max_seq_len=a.max_prompt_len + a.max_response_len + 8)
    eng.load_weights(sd)
    out = {}
    for split, k in (("train", a.k), ("heldout_id", a.held_k)):
        rows = read_prompts(Path(a.data) / f"{split}.jsonl")
        if a.limit:
            rows = rows[: a.limit]
        t0 = time.perf_counter()
        replies = teacher_replies(rows, a)
        unfinished = sum(f != "stop" for _, f in replies)
        log(f"{split}: {len(rows)} teacher replies ({unfinished} not finished) in {time.perf_counter() - t0:.0f} s")
        P = [encode_prompt(tok, r["messages"], a.max_prompt_len).ids for r in rows]
        T = [encode_teacher_reply(tok, text, a.max_response_len) for text, _ in replies]
        S, fin = [], []
        per = max(1, a.gen_batch // k)
        t0 = time.perf_counter()
        for c in range(0, len(P), per):
            roll = eng.generate([p for p in P[c:c + per] for _ in range(k)], max_new_tokens=a.max_response_len,
                                temperature=a.temperature, eos_ids=mc.eos_ids, seed=a.seed * 1000 + c + (7 if split != "train" else 0))
            S += roll.responses
            fin += roll.finished
            log(f"{split}: sampled {len(S)}/{len(P) * k} ({time.perf_counter() - t0:.0f} s)")
        out[split] = {"ids": [r["id"] for r in rows], "p": P, "t": T, "k": k, "s": S, "s_finished": fin,
                      "t_finished": [f == "stop" for _, f in replies]}
    return out


def pair_rows(split: dict) -> list[dict]:
    """One row per (prompt, sample): its prompt index, the teacher reply and the sample."""
    k = split["k"]
    return [{"i": i, "p": split["p"][i], "t": split["t"][i], "s": split["s"][i * k + j]}
            for i in range(len(split["p"])) for j in range(k)]


class ImplicitD:
    """beta * [log P_theta(y|x) - log S(y|x)]: P_theta trainable (LM head included), S frozen."""

    def __init__(self, mc, sd, a):
        self.mc, self.ref, self.temperature, self.beta = mc, sd, a.temperature, a.beta
        self.theta = {k: v.detach().clone().requires_grad_(True) for k, v in sd.items()}
        if "model.embed_tokens.weight" in sd and sd["lm_head.weight"] is sd["model.embed_tokens.weight"]:
            self.theta["lm_head.weight"] = self.theta["model.embed_tokens.weight"]  # keep the tie
        self.params = list({id(v): v for v in self.theta.values()}.values())
        self._ref: dict = {}

    def ref_lp(self, prompts, replies) -> torch.Tensor:
        keys = [(tuple(p), tuple(r)) for p, r in zip(prompts, replies)]
        miss = [i for i, key in enumerate(keys) if key not in self._ref]
        if miss:
            lp = chunked(lambda P, R: reply_logprob(self.mc, self.ref, P, R, self.temperature),
                         [prompts[i] for i in miss], [replies[i] for i in miss])
            for i, v in zip(miss, lp):
                self._ref[keys[i]] = v
        return torch.stack([self._ref[key] for key in keys])

    def score(self, prompts, replies) -> torch.Tensor:
        return self.beta * (reply_logprob(self.mc, self.theta, prompts, replies, self.temperature)
                            - self.ref_lp(prompts, replies))


class HeadD:
    """The trainer's D: the student's trunk (trainable copy) + a fresh scalar head at the last token."""

    def __init__(self, mc, sd, a):
        self.mc = mc
        self.theta = {k: v.detach().clone().requires_grad_(True) for k, v in sd.items() if k != "lm_head.weight"}
        self.head = torch.nn.Linear(mc.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)  # D = 0 at the start, as the implicit D
        torch.nn.init.zeros_(self.head.bias)
        self.params = list(self.theta.values()) + list(self.head.parameters())

    def score(self, prompts, replies) -> torch.Tensor:
        ids, last = _pad([list(p) + list(r) for p, r in zip(prompts, replies)], 0)
        return self.head(hidden(self.mc, self.theta, ids)[torch.arange(len(prompts)), last]).squeeze(-1)


def evaluate(d, held: dict, teacher_ll: list[float], student_ll: list[float]) -> dict:
    """Held-out accuracy (every pair), its prompt-clustered se, and Spearman rho of D's sample scores."""
    k = held["k"]
    t_P = chunked(d.score, held["p"], held["t"])
    s_PK = chunked(d.score, [p for p in held["p"] for _ in range(k)], held["s"]).view(len(held["p"]), k)
    t_N = t_P[:, None].expand(-1, k).reshape(-1).tolist()
    s_N = s_PK.reshape(-1).tolist()
    same = [list(held["t"][i]) == list(held["s"][i * k + j]) for i in range(len(held["p"])) for j in range(k)]
    acc, se = pairwise_accuracy(t_N, s_N, [i for i in range(len(held["p"])) for _ in range(k)], same)
    n_tok = [max(len(s), 1) for s in held["s"]]
    return {"acc": acc, "se": se,
            "rho_teacher_ll": spearman(s_N, teacher_ll),
            "rho_teacher_ll_per_token_score": spearman([s / n for s, n in zip(s_N, n_tok)], teacher_ll),
            "rho_student_ll": spearman(s_N, student_ll)}


def ll_per_token(mc, sd, held: dict, temperature: float = 1.0) -> list[float]:
    """Each held-out sample's log-likelihood per token under (mc, sd) at ``temperature``."""
    k = held["k"]
    lp = chunked(lambda P, R: reply_logprob(mc, sd, P, R, temperature),
                 [p for p in held["p"] for _ in range(k)], held["s"])
    return [float(v) / max(len(s), 1) for v, s in zip(lp, held["s"])]


def write_table(path: Path, res: dict) -> None:
    lines = [f"D check ({res['d_kind']} D): {res['n_train_pairs']} training pairs on {res['n_train_prompts']} prompts; "
             f"{res['n_held_pairs']} held-out pairs on {res['n_held_prompts']} prompts (all)",
             "", "| training pairs | held-out acc | se (prompt-clustered) | Spearman(D, teacher LL/tok) | "
             "Spearman(D/len, teacher LL/tok) | train BT loss |", "|---:|---:|---:|---:|---:|---:|"]
    for r in res["curve"]:
        loss = "" if r.get("loss") is None else f"{r['loss']:.3f}"
        lines.append(f"| {r['pairs']} | {r['acc']:.3f} | {r['se']:.3f} | {r['rho_teacher_ll']:.3f} | "
                     f"{r['rho_teacher_ll_per_token_score']:.3f} | {loss} |")
    lines += ["", f"Spearman(student's own LL/tok, teacher LL/tok) on the same samples: {res['rho_student_vs_teacher']:.3f}",
              f"samples identical to the teacher's reply: {res['train_identical']:.1%} of training pairs, "
              f"{res['held_identical']:.1%} of held-out pairs; finished (EOS) samples: {res['train_samples_finished']:.1%} "
              f"train, {res['held_samples_finished']:.1%} held-out; teacher LL/tok of held-out samples {res['teacher_ll_mean']:.3f}",
              f"wall {res['wall_s']:.0f} s"]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="the healed student's HF folder")
    ap.add_argument("--teacher", required=True, help="the teacher's HF folder (the Spearman diagnostic only)")
    ap.add_argument("--data", required=True, help="folder with train.jsonl and heldout_id.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base-url", default="http://127.0.0.1:8011/v1", help="the teacher API (gadx serve)")
    ap.add_argument("--model-name", default="smollm2-135m-instruct")
    ap.add_argument("--cache", required=True, help="the teacher cache the trainer uses")
    ap.add_argument("--teacher-temperature", type=float, default=0.7)
    ap.add_argument("--teacher-max-tokens", type=int, default=64)
    ap.add_argument("--teacher-seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=4, help="student samples per training prompt")
    ap.add_argument("--held-k", type=int, default=4, help="student samples per held-out prompt")
    ap.add_argument("--temperature", type=float, default=0.8, help="the rollout temperature")
    ap.add_argument("--max-prompt-len", type=int, default=128)
    ap.add_argument("--max-response-len", type=int, default=80)
    ap.add_argument("--d-kind", choices=("implicit", "head"), default="implicit")
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW lr of D (16 updates of 16 pairs on 64 prompts x 4)")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16, help="pairs per D update")
    ap.add_argument("--micro", type=int, default=4, help="pairs per forward/backward (memory)")
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0, help="first N prompts of each split (0 = all; smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_flush_denormal(True)  # a saturated BT loss leaves denormal grads: 20 s -> 4 min updates otherwise (gadx.train.env)
    for name in ("k", "held_k", "batch", "micro", "gen_batch", "max_response_len", "max_prompt_len"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.lr <= 0 or a.temperature <= 0:
        raise ValueError(f"--lr and --temperature must be > 0, got {a.lr}, {a.temperature}")
    torch.manual_seed(a.seed)
    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    mc, sd, tok = load_folder(Path(a.student))

    pairs_file = out / "pairs.pt"
    settings = {k: getattr(a, k) for k in ("student", "data", "k", "held_k", "temperature", "max_prompt_len",
                                           "max_response_len", "teacher_temperature", "teacher_max_tokens",
                                           "teacher_seed", "limit", "seed")}
    pairs = torch.load(pairs_file, weights_only=False) if pairs_file.exists() else None
    if pairs is None or pairs.get("settings") != settings:
        pairs = make_pairs(a, mc, sd, tok)
        pairs["settings"] = settings
        torch.save(pairs, pairs_file)
    else:
        log(f"reusing {pairs_file}")
    train, held = pair_rows(pairs["train"]), pairs["heldout_id"]

    mt, tsd, _ = load_folder(Path(a.teacher))
    teacher_ll = ll_per_token(mt, tsd, held)
    del tsd
    student_ll = ll_per_token(mc, sd, held)
    rho_base = spearman(student_ll, teacher_ll)
    log(f"teacher LL/token of the held-out samples: mean {sum(teacher_ll) / len(teacher_ll):.3f}; "
        f"Spearman with the student's own LL/token {rho_base:.3f}")

    d = ImplicitD(mc, sd, a) if a.d_kind == "implicit" else HeadD(mc, sd, a)
    opt = torch.optim.AdamW(d.params, lr=a.lr, weight_decay=0.0)
    order = list(range(len(train)))
    random.Random(a.seed).shuffle(order)
    res = {"d_kind": a.d_kind, "args": vars(a), "n_train_pairs": len(train), "n_train_prompts": len(pairs["train"]["p"]),
           "n_held_pairs": len(held["s"]), "n_held_prompts": len(held["p"]), "rho_student_vs_teacher": rho_base,
           "teacher_ll_mean": sum(teacher_ll) / len(teacher_ll),
           "held_samples_finished": sum(held["s_finished"]) / len(held["s_finished"]),
           "train_samples_finished": sum(pairs["train"]["s_finished"]) / len(pairs["train"]["s_finished"]),
           # a sample identical to the teacher's reply is a tie for any D (a student that memorised
           # the training replies gives D little to learn from)
           "train_identical": sum(list(x["t"]) == list(x["s"]) for x in train) / len(train),
           "held_identical": sum(list(held["t"][i // held["k"]]) == list(s) for i, s in enumerate(held["s"])) / len(held["s"]),
           "curve": []}

    def checkpoint(seen: int, loss):
        r = {"pairs": seen, "loss": loss, **evaluate(d, held, teacher_ll, student_ll),
             "t_s": time.perf_counter() - t_start}
        res["curve"].append(r)
        res["wall_s"] = time.perf_counter() - t_start
        (out / f"d_check_{a.d_kind}.json").write_text(json.dumps(res, indent=1))
        write_table(out / f"d_check_{a.d_kind}.md", res)
        log(f"pairs {seen:5d}  held-out acc {r['acc']:.3f} ± {r['se']:.3f}  Spearman(D, teacher LL/tok) "
            f"{r['rho_teacher_ll']:.3f}  loss {'-' if loss is None else f'{loss:.3f}'}  [{r['t_s']:.0f} s]")

    checkpoint(0, None)
    mark, seen, losses = 32, 0, []
    for c in range(0, len(order), a.batch):
        rows = [train[i] for i in order[c:c + a.batch]]
        opt.zero_grad()
        batch_loss = 0.0
        for m in range(0, len(rows), a.micro):
            mb = rows[m:m + a.micro]
            P = [x["p"] for x in mb]
            loss = -F.logsigmoid(d.score(P, [x["t"] for x in mb]) - d.score(P, [x["s"] for x in mb])).sum() / len(rows)
            loss.backward()
            batch_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(d.params, 1.0)
        opt.step()
        seen += len(rows)
        losses.append(batch_loss)
        log(f"update {c // a.batch + 1}: {seen}/{len(train)} pairs, BT loss {batch_loss:.3f} "
            f"[{time.perf_counter() - t_start:.0f} s]")
        if seen >= mark or seen == len(train):
            recent = losses[-max(1, mark // (2 * a.batch)):]
            checkpoint(seen, sum(recent) / len(recent))
            while mark <= seen:
                mark *= 2
    log(f"done in {time.perf_counter() - t_start:.0f} s: {out / f'd_check_{a.d_kind}.md'}")
    print((out / f"d_check_{a.d_kind}.md").read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:
        print(f"real_d_check: error: {e}", file=sys.stderr)
        sys.exit(2)
