"""An implicit-reward discriminator for the GAD arm: D(x, y) = beta * [log P_theta(y|x) - log S_0(y|x)].

    d = ImplicitD.from_folder(START_HF, lr=3e-4, temperature=0.8)
    d.warm(world, tok, student_engine, n_pairs=1024)       # D-only: teacher replies vs the start's samples
    t_P, s_PN = d(batch, prompts, responses)               # StepContext.d_scores: score, then one BT pass

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
                 online: bool = True, seed: int = 0, reward: str = "ratio"):
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

    def _score(self, prompts, replies, grad: bool) -> torch.Tensor:
        ref_sd = self.cur if (self.reward == "ratio_current" and self.cur is not None) else self.ref
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
                p = [r[0] for r in rows]
                loss = -F.logsigmoid(self._score(p, [r[1] for r in rows], True) - self._score(p, [r[2] for r in rows], True)).mean()
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
