"""The oracle: the embedded world's exact teacher log-likelihood of student samples.

    oracle = Oracle.from_env(env)                       # None unless the teacher is the embedded world
    logT_S = oracle.logprobs(prompt_ids_S, responses_S)  # natural log; -inf if the teacher cannot write it
    r_S = oracle.reward(prompt_ids_S, responses_S)       # per token, floored: stages.gad.reward = "oracle"

Two uses, and only these two (the rule of docs/design/gad-verdict.md):
- ``stages.gad.reward = "oracle"``: GRPO with reward log T(y|x) / |y| (floored at
  ``stages.gad.oracle_floor`` per token) instead of D's score. It is the ceiling any
  discriminator could give: if it does not beat SeqKD, no D will, and the world
  cannot separate the methods.
- diagnostics (``gad_diagnostics``): acc*, the correlation of D's score with log T,
  validity of the samples. D, the GAD arm and the SeqKD arm never see these numbers.

A sample counts as the teacher's only when it finished (ends in EOS) and its text
(the tokens decoded without special tokens, as the evaluation reads them) has
non-zero probability under the teacher.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .ceiling import acc_star, bayes_scores, pairwise_acc_ties, spearman
from .sequences import encode_prompt


class Oracle:
    exact = True  # impossible replies are known: acc* and the ceiling diagnostics (lm_oracle.LMOracle: False)

    def __init__(self, world, tok, prompt_texts: dict[tuple[int, ...], str], eos_ids: list[int], *, floor: float = -20.0):
        if floor >= 0:
            raise ValueError(f"the oracle's floor per token must be negative, got {floor}")
        self.world, self.tok, self.eos = world, tok, set(eos_ids)
        self.prompt_texts, self.floor = prompt_texts, floor

    @classmethod
    def from_env(cls, env, floor: float = -20.0, *, required: bool = False) -> "Oracle | None":
        """The oracle of an embedded run (every train and held-out prompt, by its token ids); None
        otherwise, or when prompts cut at stages.max_prompt_len share their ids (then a ValueError
        if ``required``: the oracle reward cannot tell which prompt a sample answers)."""
        if env.world is None:
            return None
        texts: dict[tuple[int, ...], str] = {}
        for s in list(env.train) + list(env.held):
            text = s.messages[-1]["content"]
            ids = tuple(encode_prompt(env.tok, s.messages, env.cfg.stages.max_prompt_len).ids)
            if texts.setdefault(ids, text) != text:
                if required:
                    raise ValueError(f"stages.max_prompt_len={env.cfg.stages.max_prompt_len} cuts two world prompts to "
                                     f"the same tokens ({text!r}, {texts[ids]!r}): raise it for the oracle reward")
                return None
        return cls(env.world, env.tok, texts, env.eos_ids, floor=floor)

    def prompt_text(self, prompt_ids) -> str:
        key = tuple(int(t) for t in prompt_ids)
        if key not in self.prompt_texts:
            raise ValueError(f"the oracle does not know the prompt {self.tok.decode(list(key))!r}")
        return self.prompt_texts[key]

    def reply_text(self, response_ids) -> str | None:
        """The reply as the teacher would have written it; None when it did not finish."""
        ids = [int(t) for t in response_ids]
        if not ids or ids[-1] not in self.eos:
            return None
        return self.tok.decode(ids, skip_special_tokens=True)

    def logprobs(self, prompt_ids, responses) -> list[float]:
        """Exact log T(reply | prompt) per sample (natural log, -inf when impossible or unfinished)."""
        out = []
        for p, r in zip(prompt_ids, responses, strict=True):
            text = self.reply_text(r)
            out.append(-math.inf if text is None else self.world.teacher.logprob(self.prompt_text(p), text))
        return out

    def per_token(self, logT: list[float], responses) -> torch.Tensor:
        """log T / reply length in tokens (EOS included), floored; -inf -> the floor."""
        return torch.tensor([max(lp / max(len(r), 1), self.floor) if math.isfinite(lp) else self.floor
                             for lp, r in zip(logT, responses, strict=True)], dtype=torch.float32)

    def reward(self, prompt_ids, responses) -> torch.Tensor:
        return self.per_token(self.logprobs(prompt_ids, responses), responses)


def gad_diagnostics(oracle: Oracle, prompts_P, teacher_P, prompts_S, responses_S, logS_S: torch.Tensor,
                    logS_teacher_P: torch.Tensor, d_teacher_P: torch.Tensor, d_student_PN: torch.Tensor,
                    reward_PN: torch.Tensor) -> dict[str, Any]:
    """Per GAD step (this rank's prompts): D against the ceiling, and what the reward carries.

    logS_*: the student's sequence log-probabilities at the sampling temperature (the samples'
    distribution, so acc* is the Bayes accuracy for telling these samples from the teacher's)."""
    P, N = d_student_PN.shape
    logT_S = oracle.logprobs(prompts_S, responses_S)
    logT_t = oracle.logprobs(prompts_P, teacher_P)
    same_PN = torch.tensor([[list(responses_S[p * N + i]) == list(teacher_P[p]) for i in range(N)] for p in range(P)])
    logT_PN = torch.tensor(logT_S, dtype=torch.float64).view(P, N)
    finite_t = torch.isfinite(torch.tensor(logT_t))
    out = {
        "oracle/valid": float(torch.isfinite(logT_PN).double().mean()),
        "oracle/logT_per_token": float(oracle.per_token(logT_S, responses_S).mean()),
        "d_acc/train_ties": float(pairwise_acc_ties(d_teacher_P.detach().cpu(), d_student_PN.detach().cpu(), same_PN)),
        # groups whose rewards are all equal: GRPO's std normaliser gives them zero advantage
        "reward/no_spread": float((reward_PN.float().std(dim=1) < 1e-6).double().mean()),
        "corr/d_vs_logT": spearman(d_student_PN.detach().cpu(), torch.clamp(logT_PN, min=-1e9)),
        # against the Bayes-optimal score log T - log S: what D should learn. D's score may rank the
        # student's samples against log T and still be right (a mode-collapsed student makes the
        # teacher's rarer phrasings the tell), so both are logged
        "corr/d_vs_bayes": spearman(d_student_PN.detach().cpu(),
                                    torch.clamp(bayes_scores(logT_PN, logS_S.detach().cpu().view(P, N)), min=-1e9)),
    }
    # a teacher reply cut at max_response_len is no teacher sample: no ceiling then (nan, so that every
    # data-parallel rank logs the same keys: dp_mean reduces them as one tensor)
    out["d_acc/ceiling"] = math.nan
    if finite_t.all():
        out["d_acc/ceiling"] = float(acc_star(torch.tensor(logT_t), logS_teacher_P.detach().cpu(), logT_PN,
                                              logS_S.detach().cpu().view(P, N), same_PN))
    return out


@torch.no_grad()
def heldout_ceiling(ctx, oracle: Oracle | None, prompts_P, teacher_P, roll, d_teacher_P, d_student_PN) -> dict[str, Any]:
    """D's held-out accuracy (ties 1/2) with its prompt-clustered error, and acc* on the same pairs
    (None without an oracle, or when a teacher reply was cut at max_response_len)."""
    from .ceiling import pairwise_acc_se

    P, N = d_student_PN.shape
    samples = roll.responses
    same_PN = torch.tensor([[list(samples[p * N + i]) == list(teacher_P[p]) for i in range(N)] for p in range(P)])
    acc, se = pairwise_acc_se(d_teacher_P.cpu(), d_student_PN.cpu(), same_PN)
    out: dict[str, Any] = {"acc": acc, "se": se, "n_pairs": P * N, "acc_star": None}
    if oracle is None or not oracle.exact:
        return out
    logT_t = torch.tensor(oracle.logprobs(prompts_P, teacher_P), dtype=torch.float64)
    if not torch.isfinite(logT_t).all():
        return out
    G = ctx.student
    mbs = ctx.pack(prompts_P, teacher_P)
    lt = G.token_logprobs(mbs, P, temperature=ctx.stages.temperature)
    logS_t = torch.stack([x.sum() for x in lt]).cpu()
    logS_s = torch.stack([x.float().sum() for x in roll.logprobs]).cpu().view(P, N)
    logT_s = torch.tensor(oracle.logprobs([p for p in prompts_P for _ in range(N)], samples), dtype=torch.float64).view(P, N)
    out["acc_star"] = float(acc_star(logT_t, logS_t, logT_s, logS_s, same_PN))
    return out
