"""GAD with the implicit D and per-token credit, on the embedded world (an issue-14 experiment).

    python tools/gad_token.py START OUT [--seed 0] [--steps 40] [--lr 1e-4] [--id-lr 5e-5] [--id-warm-pairs 1024]

The implicit D (tools/implicit_d.py) is D(x, y) = log P_theta(y|x) - log S_t(y|x) (beta 1, S_t the current
student): a sum of per-token terms, and the student's GAD objective is E_{y~S}[D(x, y)] = -KL(S || P_theta).
GRPO estimates its gradient from 8 sequence-level rewards per prompt, normalised per group; here the student
instead descends the per-token reverse KL(S_T || P_theta,T) at every position of its own samples, summed over
the whole vocabulary (exact in the next token; the prefix term is dropped, as on-policy distillation does).
D is trained on-policy exactly as in the GRPO arm: Bradley-Terry on (teacher reply, student sample) pairs,
after a D-only warm-up on the same pairs as `tools/oracle_arm.py gad --implicit-d`. The same stage size as
recipes/oracle_arm.toml (16 prompts x 8 samples at T = 0.8 a step); plain PyTorch on HF-named tensors, one
process. Writes OUT/log.jsonl (per step: batch validity, the KL, D's loss, the rank correlation of D's score
with log T per token), OUT/student.safetensors and OUT/eval.json (tools/oracle_arm.py compare reads it).
Measured: docs/gad_verdict.md ("Why GAD follows its discriminator's language model").
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


def token_reverse_kl(mc, s_sd: dict, q_sd: dict, ids_BT: torch.Tensor, mask_BT: torch.Tensor, temperature: float):
    """Mean over the masked positions of KL(S_T(.|prefix) || Q_T(.|prefix)), gradient through s_sd only."""
    with torch.no_grad():
        lq_BTV = torch.log_softmax(F.linear(hidden(mc, q_sd, ids_BT), q_sd["lm_head.weight"]).float() / temperature, -1)
    ls_BTV = torch.log_softmax(F.linear(hidden(mc, s_sd, ids_BT), s_sd["lm_head.weight"]).float() / temperature, -1)
    kl_BT = (ls_BTV.exp() * (ls_BTV - lq_BTV)).sum(-1)
    return kl_BT[mask_BT].mean()


def reply_mask(prompts: list[list[int]], replies: list[list[int]], T: int) -> torch.Tensor:
    """[B, T]: the positions that predict each reply's tokens (len(p) - 1 .. len(p) + len(r) - 2)."""
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, replies)):
        mask[i, len(p) - 1: len(p) + len(r) - 1] = True
    return mask


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def main(argv=None) -> int:
    from implicit_d import ImplicitD
    from oracle_arm import _load, _table
    from gadx.train.sequences import encode_prompt, encode_teacher_reply
    from gadx.train.verdict import evaluate_model
    from gadx.world import World

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("start")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--samples", type=int, default=8, help="student samples per prompt")
    ap.add_argument("--lr", type=float, default=1e-4, help="the student's lr (AdamW)")
    ap.add_argument("--id-lr", type=float, default=5e-5, help="the implicit D's lr")
    ap.add_argument("--id-warm-pairs", type=int, default=1024)
    ap.add_argument("--clip", type=float, default=0.2, help="the student's grad-norm clip (the trainer's default)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--n", type=int, default=200, help="evaluation prompts per test split")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.prompts < 1 or a.samples < 1 or a.lr <= 0:
        raise ValueError(f"steps, prompts, samples and lr must be positive, got {a.steps}, {a.prompts}, {a.samples}, {a.lr}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    mc, sd0, eng, tok = _load(Path(a.start))
    world = World(seed=0)
    d = ImplicitD.from_folder(a.start, lr=a.id_lr, temperature=a.temperature, seed=a.seed, reward="ratio_current")
    warm = d.warm(world, tok, eng, a.id_warm_pairs, seed=a.seed + 11)
    print(f"D: {a.id_warm_pairs} warm-up pairs, loss {warm:.3f} [{time.perf_counter() - t0:.0f} s]", flush=True)
    # the student keeps its tied head tied: lm_head is the embedding in every forward
    stud = {k: v.detach().clone().float().requires_grad_(True) for k, v in sd0.items() if k != "lm_head.weight"}
    view = lambda: {**stud, "lm_head.weight": stud["model.embed_tokens.weight"]}  # noqa: E731
    opt = torch.optim.AdamW(list(stud.values()), lr=a.lr, weight_decay=0.0)
    rng = random.Random(a.seed)
    train = [ex.prompt for ex in world.split("train")]
    order = list(range(len(train)))
    rng.shuffle(order)
    eos = tok.eos_id

    def log_t(prompt, r, fin):  # a diagnostic only: the exact teacher log-likelihood (never in D or the loss)
        if not fin or not r or r[-1] != eos:
            return -math.inf
        return world.teacher.logprob(prompt, tok.decode(r, skip_special_tokens=True))

    log = []
    for step in range(a.steps):
        ts = time.perf_counter()
        texts = [train[order[(step * a.prompts + i) % len(order)]] for i in range(a.prompts)]
        P = [encode_prompt(tok, [{"role": "user", "content": t}], 48).ids for t in texts]
        teach = [encode_teacher_reply(tok, world.teacher.sample(t, rng), 48) for t in texts]
        cur = {k: v.detach() for k, v in view().items()}
        eng.load_weights(cur)
        roll = eng.generate([p for p in P for _ in range(a.samples)], max_new_tokens=48, temperature=a.temperature,
                            eos_ids=[eos], seed=a.seed * 100_003 + step)
        R = [list(r) for r in roll.responses]
        Pp = [P[i // a.samples] for i in range(len(R))]
        lT = [log_t(texts[i // a.samples], R[i], roll.finished[i]) for i in range(len(R))]
        d.set_current(cur)
        d_scores = d.scores(Pp, R)
        d_loss = d.update([(P[i // a.samples], teach[i // a.samples], R[i]) for i in range(len(R))])
        ids, _ = _pad([list(p) + r for p, r in zip(Pp, R)], 0)
        loss = token_reverse_kl(mc, view(), d.theta, ids, reply_mask(Pp, R, ids.shape[1]), a.temperature)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(list(stud.values()), a.clip)
        opt.step()
        lt = torch.tensor([x / max(len(r), 1) if math.isfinite(x) else -1e9 for x, r in zip(lT, R)])
        corr = float(torch.corrcoef(torch.stack([_ranks(d_scores), _ranks(lt)]))[0, 1])
        row = {"step": step, "valid": sum(map(math.isfinite, lT)) / len(lT), "kl": float(loss.detach()), "d_loss": d_loss,
               "corr_d_logT": corr, "grad_norm": float(gn), "len": sum(map(len, R)) / len(R),
               "time": time.perf_counter() - ts}
        log.append(row)
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    final = {k: v.detach() for k, v in view().items()}
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in stud.items()}, str(out / "student.safetensors"))
    prompts = {s: [ex.prompt for ex in world.split(s)[:a.n]] for s in ("test_id", "test_ood")}
    res = {"folder": str(out / "student_hf"), "args": vars(a),
           "splits": evaluate_model(world, tok, eng, final, mc, prompts, k=4, max_prompt_len=48, max_new=48)}
    res["wall_s"] = time.perf_counter() - t0
    (out / "eval.json").write_text(json.dumps(res, indent=1))
    print(_table(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
