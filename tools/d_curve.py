"""A discriminator's learning curve on a frozen student, beside its exact ceiling acc*.

    python tools/d_curve.py STUDENT_HF [--pairs 4096] [--held 256] [--lr 1e-3] [--batch 32] [--out curve.json]

Pairs (teacher reply, student sample at T=0.8) on the embedded world's train prompts train D
with the Bradley-Terry loss, one pass, ``--batch`` pairs a step; after 2^k pairs D's pairwise
accuracy (ties 1/2, error clustered by prompt) on held-out pairs from test_id prompts is logged
beside acc*, the accuracy of the Bayes-optimal score log T(y|x) - log S_0.8(y|x) on the same
held-out pairs (exact teacher probabilities: a diagnostic only; D never sees them).

Two kinds of D (``--d-kind``), both run as plain PyTorch on the HF weights (right-padded batches,
causal attention), so the tool needs no parallel setup:
  head      the student's transformer with a fresh scalar head read at the reply's last token (the
            trainer's D today): it must learn, from one bit per pair, to compare reply and prompt.
  implicit  D(x, y) = beta * [log P_theta(y|x) - log S(y|x)] at the sampling temperature, summed over
            the reply's tokens: P_theta starts as a trainable copy of the student S (so D = 0 at
            the start) and S stays frozen. The Bradley-Terry optimum log T - log S + c is exactly
            P_theta = T at beta = 1, so D only has to move a language model that already reads the
            prompt (the copy skill lives in its token log-probs) toward the teacher, token by token,
            instead of growing a scalar judgement from scratch (DPO's implicit reward, with the
            student as the reference). It needs no teacher probabilities: only text pairs.
Single process; OMP_NUM_THREADS=1 or 2. ``--cache`` keeps the sampled pairs (and acc*) in a file so
several D settings are compared on the same pairs.
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
from oracle_arm import _load  # noqa: E402


def hidden(mc, sd, ids_BT: torch.Tensor) -> torch.Tensor:
    """Final-normed hidden states [B, T, H] of a Qwen2-shaped model from HF-named tensors
    (right padding is harmless under causal attention for the positions read)."""
    B, T = ids_BT.shape
    H, nh, nkv = mc.hidden_size, mc.num_heads, mc.num_kv_heads
    hd = mc.head_dim or H // nh
    pos = torch.arange(T)
    inv = 1.0 / (mc.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    f = pos[:, None].float() * inv[None]
    cos, sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)

    def rope(x):  # [B, h, T, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mc.rms_norm_eps) * w

    x = sd["model.embed_tokens.weight"][ids_BT]
    for i in range(mc.num_layers):
        pre = f"model.layers.{i}."
        h = rms(x, sd[pre + "input_layernorm.weight"])
        q = F.linear(h, sd[pre + "self_attn.q_proj.weight"], sd.get(pre + "self_attn.q_proj.bias"))
        k = F.linear(h, sd[pre + "self_attn.k_proj.weight"], sd.get(pre + "self_attn.k_proj.bias"))
        v = F.linear(h, sd[pre + "self_attn.v_proj.weight"], sd.get(pre + "self_attn.v_proj.bias"))
        q = rope(q.view(B, T, nh, hd).transpose(1, 2))
        k = rope(k.view(B, T, nkv, hd).transpose(1, 2)).repeat_interleave(nh // nkv, 1)
        v = v.view(B, T, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, 1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + F.linear(att, sd[pre + "self_attn.o_proj.weight"])
        h = rms(x, sd[pre + "post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(h, sd[pre + "mlp.gate_proj.weight"])) * F.linear(h, sd[pre + "mlp.up_proj.weight"]),
                         sd[pre + "mlp.down_proj.weight"])
    return rms(x, sd["model.norm.weight"])


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) - 1 for s in seqs])


def seq_logprob(mc, sd, prompts, responses, temperature: float) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for c in range(0, len(prompts), 64):
            P, R = prompts[c:c + 64], responses[c:c + 64]
            ids, _ = _pad([list(p) + list(r) for p, r in zip(P, R)], 0)
            logits = F.linear(hidden(mc, sd, ids), sd["lm_head.weight"]) / temperature
            lp = torch.log_softmax(logits.float(), -1)
            for i, (p, r) in enumerate(zip(P, R)):
                tgt = torch.tensor(list(r))
                out.append(lp[i, len(p) - 1: len(p) + len(r) - 1].gather(1, tgt[:, None]).sum())
    return torch.stack(out).double()


def seq_reply_logprob(mc, sd, prompts, replies, temperature: float) -> torch.Tensor:
    """Per sequence, the sum over the reply's tokens of log P(token | prefix) at ``temperature``
    (differentiable in sd's tensors). prompts, replies: token-id lists."""
    ids, _ = _pad([list(p) + list(r) for p, r in zip(prompts, replies)], 0)
    logits = F.linear(hidden(mc, sd, ids), sd["lm_head.weight"]) / temperature
    lp_BTV = torch.log_softmax(logits.float(), -1)
    # position i predicts token i + 1: the reply's tokens are predicted at len(p) - 1 .. len(p) + len(r) - 2
    tgt = torch.zeros_like(ids)
    tgt[:, :-1] = ids[:, 1:]
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, replies)):
        mask[i, len(p) - 1: len(p) + len(r) - 1] = True
    tok_BT = lp_BTV.gather(2, tgt[..., None]).squeeze(-1)
    return (tok_BT * mask).sum(1)


def reply_logprob(mc, sd, rows, which: str, temperature: float) -> torch.Tensor:
    return seq_reply_logprob(mc, sd, [x["p"] for x in rows], [x[which] for x in rows], temperature)


def make_pairs(world, tok, eng, prompts: list[str], k: int, seed: int, temperature: float):
    """k (teacher reply, student sample) pairs per prompt: k teacher samples and k student samples."""
    from gadx.train.sequences import encode_prompt, encode_teacher_reply

    rng = random.Random(seed)
    ids = [encode_prompt(tok, [{"role": "user", "content": p}], 48).ids for p in prompts]
    rows = []
    for c in range(0, len(prompts), 64):
        P = ids[c:c + 64]
        roll = eng.generate([x for x in P for _ in range(k)], max_new_tokens=48, temperature=temperature,
                            eos_ids=[tok.eos_id], seed=seed + c)
        for i, p in enumerate(P):
            text = prompts[c + i]
            for j in range(k):
                t = encode_teacher_reply(tok, world.teacher.sample(text, rng), 48)
                s = roll.responses[i * k + j]
                rows.append({"prompt": text, "p": p, "t": t, "s": s, "fin": roll.finished[i * k + j],
                             "logS_s": float(roll.logprobs[i * k + j].sum())})
    return rows


def acc_star_of(world, tok, mc, sd, rows, temperature: float) -> float:
    from gadx.train.ceiling import acc_star

    def logT(prompt, r, fin=True):
        if not fin or r[-1] != tok.eos_id:
            return -math.inf
        return world.teacher.logprob(prompt, tok.decode(r, skip_special_tokens=True))

    lT_t = torch.tensor([logT(x["prompt"], x["t"]) for x in rows], dtype=torch.float64)
    lS_t = seq_logprob(mc, sd, [x["p"] for x in rows], [x["t"] for x in rows], temperature)
    lT_s = torch.tensor([logT(x["prompt"], x["s"], x["fin"]) for x in rows], dtype=torch.float64)
    lS_s = torch.tensor([x["logS_s"] for x in rows], dtype=torch.float64)
    same = torch.tensor([list(x["t"]) == list(x["s"]) for x in rows])
    keep = torch.isfinite(lT_t)  # a teacher reply cut at 48 tokens is no teacher sample
    return float(acc_star(lT_t[keep], lS_t[keep], lT_s[keep][:, None], lS_s[keep][:, None], same[keep][:, None]))


def main(argv=None) -> int:
    from gadx.world import World

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("student")
    ap.add_argument("--pairs", type=int, default=4096)
    ap.add_argument("--held", type=int, default=256, help="held-out pairs (test_id prompts x 2)")
    ap.add_argument("--k", type=int, default=2, help="pairs per training prompt")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    ap.add_argument("--d-kind", choices=("head", "implicit"), default="head")
    ap.add_argument("--beta", type=float, default=1.0, help="implicit D: the scale of its log-ratio")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the training pairs")
    ap.add_argument("--cache", default="", help="a .pt file of the pairs: made once, reused")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    folder = Path(a.student)
    mc, sd, eng, tok = _load(folder)
    world = World(seed=0)
    train_prompts = [ex.prompt for ex in world.split("train")]
    n_train_prompts = min(len(train_prompts), -(-a.pairs // a.k))
    cache = Path(a.cache) if a.cache else None
    if cache is not None and cache.exists():
        train, held, ceiling = torch.load(cache, weights_only=False)
        train = train[: a.pairs]
    else:
        train = make_pairs(world, tok, eng, train_prompts[:n_train_prompts], a.k, a.seed, a.temperature)[: a.pairs]
        held = make_pairs(world, tok, eng, [ex.prompt for ex in world.split("test_id")][: a.held // 2], 2, a.seed + 7, a.temperature)
        ceiling = acc_star_of(world, tok, mc, sd, held, a.temperature)
        if cache is not None:
            torch.save((train, held, ceiling), cache)
    print(f"{len(train)} training pairs on {n_train_prompts} prompts, {len(held)} held-out pairs; "
          f"acc* (held-out) = {ceiling:.3f}; pairs made in {time.perf_counter() - t0:.0f} s", flush=True)

    if a.d_kind == "head":  # the student's trunk (trainable copy) + a fresh score head
        dsd = {k: v.clone().requires_grad_(True) for k, v in sd.items() if k != "lm_head.weight"}
        head = torch.nn.Linear(mc.hidden_size, 1)
        params = list(dsd.values()) + list(head.parameters())
    else:  # a trainable copy of the whole student, LM head included; the frozen student is the reference
        dsd = {k: v.clone().requires_grad_(True) for k, v in sd.items()}
        params = list(dsd.values())
        ref = {}  # the frozen student's reply log-prob, per (row id, side): computed once

        def ref_lp(rows, which):
            missing = [x for x in rows if (id(x), which) not in ref]
            if missing:
                with torch.no_grad():
                    for x, v in zip(missing, reply_logprob(mc, sd, missing, which, a.temperature)):
                        ref[(id(x), which)] = v
            return torch.stack([ref[(id(x), which)] for x in rows])
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01 if a.d_kind == "head" else 0.0)

    def scores(rows, which):
        if a.d_kind == "implicit":
            return a.beta * (reply_logprob(mc, dsd, rows, which, a.temperature) - ref_lp(rows, which))
        ids, last = _pad([list(x["p"]) + list(x[which]) for x in rows], 0)
        h = hidden(mc, dsd, ids)
        return head(h[torch.arange(len(rows)), last]).squeeze(-1)

    def evaluate():
        with torch.no_grad():
            t = torch.cat([scores(held[c:c + 64], "t") for c in range(0, len(held), 64)])
            s = torch.cat([scores(held[c:c + 64], "s") for c in range(0, len(held), 64)])
        same = torch.tensor([list(x["t"]) == list(x["s"]) for x in held])
        return _acc_pairs(t, s, same)

    curve = []
    acc, se = evaluate()
    curve.append({"pairs": 0, "acc": acc, "se": se})
    print(f"pairs {0:6d}  held-out acc {acc:.3f} ± {se:.3f}  (acc* {ceiling:.3f})", flush=True)
    mark = 256
    order = []
    for e in range(a.epochs):
        o = list(range(len(train)))
        random.Random(a.seed + e).shuffle(o)
        order += o
    seen = 0
    for c in range(0, len(order), a.batch):
        rows = [train[i] for i in order[c:c + a.batch]]
        loss = -F.logsigmoid(scores(rows, "t") - scores(rows, "s")).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        seen += len(rows)
        if seen >= mark or c + a.batch >= len(order):
            acc, se = evaluate()
            curve.append({"pairs": seen, "acc": acc, "se": se, "loss": float(loss.detach())})
            print(f"pairs {seen:6d}  held-out acc {acc:.3f} ± {se:.3f}  (acc* {ceiling:.3f})  "
                  f"train loss {float(loss.detach()):.3f}  [{time.perf_counter() - t0:.0f} s]", flush=True)
            mark *= 2
    out = {"student": str(folder), "acc_star": ceiling, "curve": curve, "args": vars(a),
           "wall_s": time.perf_counter() - t0}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


def _acc_pairs(t: torch.Tensor, s: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """Held-out accuracy (ties 1/2; an identical reply is a tie) and its error, the two pairs of a
    prompt as one cluster (each pair has its own teacher reply, so pairwise_acc_se's one-reply-per-
    prompt layout does not apply)."""
    credit = (t > s).double() + 0.5 * (t == s).double()
    credit = torch.where(same, torch.full_like(credit, 0.5), credit).view(-1, 2)
    per_P = credit.mean(dim=1)
    acc = float(credit.mean())
    se = float(per_P.std(unbiased=True)) / math.sqrt(per_P.numel())
    return acc, max(se, math.sqrt(max(acc * (1 - acc), 0.25 / credit.numel()) / credit.numel()))


if __name__ == "__main__":
    sys.exit(main())
