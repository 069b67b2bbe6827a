"""An implicit-reward discriminator for the GAD arm: D(x, y) = beta * [log P_theta(y|x) - log S_0(y|x)].

    d = ImplicitD.from_folder(START_HF, lr=3e-4, temperature=0.8)
    d.warm(world, tok, student_engine, n_pairs=1024)       # D-only: teacher replies vs the start's samples
    t_P, s_PN = d(batch, prompts, responses)               # StepContext.d_scores: score, then one BT pass

    python tools/implicit_d.py policy START OUT [--pairs 1024] [--lr 5e-5] [--bt 1] [--sft 0] [--n 200]

``policy`` reads P_theta as a student: D warmed on --pairs pairs, then P_theta's own samples evaluated like any
arm's (OUT/eval.json, for tools/oracle_arm.py compare). Why: with the current student as reference, GAD's expected
reward is E_S[D] = -KL(S || P_theta) (beta 1), so the GAD student can at best move toward P_theta: a D whose language
model samples worse than the start cannot lead the student above it. --bt 0 --sft 1 is SFT on the same teacher
replies (the control that sees the same teacher data).

P_theta is a trainable copy of the start student S_0, LM head included, and S_0 (at the sampling
temperature) stays frozen as the reference, so D = 0 at the start. The Bradley-Terry optimum
log T - log S + c is P_theta = T (beta = 1, S = S_0): D only has to move a language model that
already reads the prompt toward the teacher, token by token, instead of growing a scalar judgement
of reply-vs-prompt from one bit per pair. tools/d_curve.py --d-kind implicit measures its learning
curve against acc* (recipes/RESULTS_embedded.md); it uses text pairs only, never the teacher's
probabilities. Plain PyTorch on HF-named tensors, one process (the tools' GAD arm runs at DP=1).
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d_curve import make_pairs, seq_reply_logprob  # noqa: E402


class ImplicitD:
    def __init__(self, mc, sd, *, lr: float, temperature: float, beta: float = 1.0, batch: int = 32, epochs: int = 1,
                 online: bool = True, seed: int = 0, reward: str = "ratio", sft_weight: float = 0.0,
                 bt_weight: float = 1.0):
        if beta <= 0 or lr <= 0 or temperature <= 0:
            raise ValueError(f"beta, lr and temperature must be > 0, got {beta}, {lr}, {temperature}")
        if reward not in ("ratio", "logp", "ratio_current"):
            raise ValueError(f"reward must be ratio, logp or ratio_current, got {reward!r}")
        # "ratio_current": the reference is the current student S_t (set_current before each step), in D's
        # training and its reward alike: D = log P_theta - log S_t, whose BT optimum is P_theta = T whatever
        # the student, and whose expectation over S_t's samples is -KL(S_t || P_theta): the reverse-KL
        # gradient towards P_theta, with no bonus for replies D has not seen
        self.cur: dict | None = None
        # what the hook hands GAD: "ratio" = D itself; "logp" = D's learned part only, log P_theta(y|x) per
        # token (the reward then has the oracle's form with P_theta in the teacher's place). Why: with a
        # frozen reference S_0, D = log P_theta - log S_0 is ~0 on replies its training never touched,
        # above the student's recent samples, which training pushed down: a bonus for new errors
        # (measured: recipes/RESULTS_embedded.md, "gi1")
        self.reward = reward
        self.mc, self.ref = mc, {k: v.detach() for k, v in sd.items()}
        self.theta = {k: v.detach().clone().requires_grad_(True) for k, v in sd.items()}
        self.opt = torch.optim.AdamW(list(self.theta.values()), lr=lr, weight_decay=0.0)
        self.temperature, self.beta, self.batch, self.epochs, self.online = temperature, beta, batch, epochs, online
        # sft_weight: the Bradley-Terry loss plus this times P_theta's NLL per token of the teacher reply (the
        # chosen side). Why: BT alone can lower the likelihood of both sides (as DPO does), so P_theta drifts off
        # any good language model, and the student, which maximises log P_theta - log S_t, follows it there;
        # the NLL term keeps P_theta a SeqKD-quality model of the teacher's replies, from the same teacher text
        if sft_weight < 0 or bt_weight < 0 or sft_weight + bt_weight == 0:
            raise ValueError(f"sft_weight and bt_weight must be >= 0 and not both 0, got {sft_weight}, {bt_weight}")
        self.sft_weight, self.bt_weight = sft_weight, bt_weight
        self.rng = random.Random(seed)
        self.log: list[dict] = []

    @classmethod
    def from_folder(cls, folder, **kw) -> "ImplicitD":
        from gadx.models import ModelConfig
        from safetensors.torch import load_file

        folder = Path(folder)
        sd = load_file(str(folder / "model.safetensors"))
        sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
        return cls(ModelConfig.from_pretrained(folder), sd, **kw)

    def set_current(self, sd: dict) -> None:
        """The current student's weights (HF names): the reference of reward="ratio_current"."""
        sd = {k: v.detach().float() for k, v in sd.items()}
        sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
        self.cur = sd

    def _ref_sd(self) -> dict:
        return self.cur if (self.reward == "ratio_current" and self.cur is not None) else self.ref

    def _score(self, prompts, replies, grad: bool) -> torch.Tensor:
        ref_sd = self._ref_sd()
        with torch.no_grad():
            ref = seq_reply_logprob(self.mc, ref_sd, prompts, replies, self.temperature)
        with torch.set_grad_enabled(grad):
            return self.beta * (seq_reply_logprob(self.mc, self.theta, prompts, replies, self.temperature) - ref)

    def scores(self, prompts, replies, chunk: int = 64) -> torch.Tensor:
        return torch.cat([self._score(prompts[c:c + chunk], replies[c:c + chunk], False)
                          for c in range(0, len(prompts), chunk)]) if prompts else torch.zeros(0)

    def logp_per_token(self, prompts, replies, chunk: int = 64) -> torch.Tensor:
        """log P_theta(y|x) / |y| at the sampling temperature, no grad."""
        with torch.no_grad():
            lp = torch.cat([seq_reply_logprob(self.mc, self.theta, prompts[c:c + chunk], replies[c:c + chunk], self.temperature)
                            for c in range(0, len(prompts), chunk)])
        return lp / torch.tensor([max(len(r), 1) for r in replies], dtype=lp.dtype)

    def update(self, pairs: list[tuple[list[int], list[int], list[int]]]) -> float:
        """Bradley-Terry passes over (prompt, teacher reply, student sample) triples; the mean loss."""
        losses = []
        for _ in range(self.epochs):
            order = list(range(len(pairs)))
            self.rng.shuffle(order)
            for c in range(0, len(order), self.batch):
                rows = [pairs[i] for i in order[c:c + self.batch]]
                p, t = [r[0] for r in rows], [r[1] for r in rows]
                ref = self._ref_sd()
                with torch.no_grad():
                    ref_t = seq_reply_logprob(self.mc, ref, p, t, self.temperature)
                    ref_s = seq_reply_logprob(self.mc, ref, p, [r[2] for r in rows], self.temperature)
                lp_t = seq_reply_logprob(self.mc, self.theta, p, t, self.temperature)
                lp_s = seq_reply_logprob(self.mc, self.theta, p, [r[2] for r in rows], self.temperature)
                loss = -self.bt_weight * F.logsigmoid(self.beta * ((lp_t - ref_t) - (lp_s - ref_s))).mean()
                if self.sft_weight:
                    loss = loss - self.sft_weight * (lp_t / torch.tensor([max(len(x), 1) for x in t], dtype=lp_t.dtype)).mean()
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(self.theta.values()), 1.0)
                self.opt.step()
                losses.append(float(loss.detach()))
        return sum(losses) / max(len(losses), 1)

    def warm(self, world, tok, engine, n_pairs: int, seed: int = 0) -> float:
        """D-only updates on n_pairs (teacher reply, start-student sample) pairs of the world's train prompts."""
        if n_pairs <= 0:
            return 0.0
        prompts = [ex.prompt for ex in world.split("train")][: -(-n_pairs // 2)]
        rows = make_pairs(world, tok, engine, prompts, 2, seed, self.temperature)[:n_pairs]
        return self.update([(r["p"], r["t"], r["s"]) for r in rows])

    def __call__(self, batch, prompts, responses):
        """StepContext.d_scores: the teacher replies' and the samples' scores before this step's update."""
        P = len(batch.prompts)
        n = len(responses) // P
        assert n * P == len(responses) and all(list(prompts[i * n]) == list(batch.prompts[i]) for i in range(P))
        if self.reward in ("ratio", "ratio_current"):
            t_P = self.scores(batch.prompts, batch.teacher)
            s_PN = self.scores(list(prompts), list(responses)).view(P, n)
        else:
            t_P = self.logp_per_token(batch.prompts, batch.teacher)
            s_PN = self.logp_per_token(list(prompts), list(responses)).view(P, n)
        if self.online:
            loss = self.update([(batch.prompts[i], batch.teacher[i], responses[i * n + j]) for i in range(P) for j in range(n)])
            self.log.append({"loss": loss, "acc": float(((t_P[:, None] > s_PN).double() + 0.5 * (t_P[:, None] == s_PN).double()).mean())})
        return t_P, s_PN


def main(argv=None) -> int:
    import argparse
    import json
    import time

    from oracle_arm import _load, _table
    from gadx.train.verdict import evaluate_model
    from gadx.world import World

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("policy", help="warm D, then evaluate P_theta as a student")
    p.add_argument("start")
    p.add_argument("out")
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--bt", type=float, default=1.0, help="weight of the Bradley-Terry loss")
    p.add_argument("--sft", type=float, default=0.0, help="weight of P_theta's NLL per token of the teacher reply")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=200, help="prompts per test split")
    p.add_argument("--k", type=int, default=4)
    a = ap.parse_args(argv)
    out = Path(a.out)
    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    d = ImplicitD.from_folder(a.start, lr=a.lr, temperature=0.8, seed=a.seed, bt_weight=a.bt, sft_weight=a.sft)
    mc, _, eng, tok = _load(Path(a.start))
    world = World(seed=0)
    loss = d.warm(world, tok, eng, a.pairs, seed=a.seed + 11)  # the same pairs as oracle_arm.py gad --implicit-d
    print(f"P_theta after {a.pairs} pairs (bt {a.bt}, sft {a.sft}, lr {a.lr}): loss {loss:.3f} "
          f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    theta = {k: v.detach() for k, v in d.theta.items()}
    prompts = {s: [ex.prompt for ex in world.split(s)[:a.n]] for s in ("test_id", "test_ood")}
    res = {"folder": str(out / "student_hf"), "pairs": a.pairs, "lr": a.lr, "bt": a.bt, "sft": a.sft, "seed": a.seed,
           "splits": evaluate_model(world, tok, eng, theta, mc, prompts, k=a.k, max_prompt_len=48, max_new=48)}
    res["wall_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(res, indent=1))
    print(_table(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
