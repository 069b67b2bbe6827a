"""One training step of each stage, on packed micro-batches through megatron's schedule.

    m = seqkd_step(ctx, batch, step)   # CE on teacher replies
    m = warmup_step(ctx, batch, step)  # D Bradley-Terry on (teacher, N fresh samples); G CE unless D-only
    m = gad_step(ctx, batch, step)     # the GAD step below, in the paper's order

The discriminator is either kind (config ``discriminator.kind``): a score head, or the implicit-reward
D = beta * (log P_theta - log S_t) whose reference S_t is the current student: its log-likelihoods of
the step's pairs ride on the packed micro-batches (``with_ref``).

Every function returns a dict of metrics whose values may be 0-d tensors (the
logger converts them once per logged step), identical on every rank: the models'
verbs (player.py) return the same numbers on every pipeline stage, summed over
data-parallel ranks. ``ctx`` is a ``StepContext``.

Rollouts: a rank's prompts are sampled ``rollout_prompts_per_call`` at a time, each
call seeded by (run seed, step, global index of its first prompt), so when that
number divides every rank's share the samples do not depend on the DP size.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

from gadx.sampler.chunked import release

from .losses import bt_loss, group_advantages, pairwise_acc
from .packing import MicroBatch, pack
from .player import Player, dp_mean

if TYPE_CHECKING:  # annotations only: no import cost, no cycle through the trainer's modules
    from gadx.parallel import ParallelDims
    from gadx.sampler.engine import RolloutEngine

    from .config import StagesCfg
    from .lm_oracle import LMOracle
    from .oracle import Oracle


@dataclass
class Batch:
    """This rank's slice of a step: its prompts (global indices ``first`` ..) with their teacher replies."""

    prompts: list[list[int]]
    teacher: list[list[int]]
    teacher_finished: list[bool]
    global_prompts: int  # P over all DP ranks
    first: int = 0  # global index (within the step) of this rank's first prompt
    teacher_wait_s: float = 0.0

    def every(self, m: int) -> "Batch":
        """Every m-th prompt of the step (global indices 0, m, 2m, ...), D's share of a larger SFT
        batch: the same prompts at every DP size, since each rank's slice starts at a multiple of m."""
        if m <= 1:
            return self
        assert self.first % m == 0 and self.global_prompts % m == 0, (self.first, self.global_prompts, m)
        return Batch(self.prompts[::m], self.teacher[::m], self.teacher_finished[::m], self.global_prompts // m,
                     self.first // m, self.teacher_wait_s)


@dataclass
class StepContext:
    student: Player
    disc: Player | None
    ref: Player | None
    engine: RolloutEngine
    sync_weights: Callable[[], None]  # student weights -> engine
    eos_ids: list[int]
    stages: StagesCfg
    budget: int  # micro-batch token budget
    dims: ParallelDims
    sample_seed: int = 0
    recorder: list[str] | None = None  # order-of-operations log (tests)
    # the embedded world's exact teacher (the oracle reward and diagnostics), or a real teacher's weights
    # (lm_oracle.LMOracle: the reward only)
    oracle: Oracle | LMOracle | None = None
    # an outside discriminator (tools/implicit_d.py): d_scores(batch, prompts, responses) -> (teacher_P,
    # student_PN), scored before its own update; replaces D's scores in the reward and the diagnostics
    d_scores: Callable | None = None
    times: dict[str, float] = field(default_factory=dict)

    def note(self, what: str) -> None:
        if self.recorder is not None:
            self.recorder.append(what)

    @contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def pack(self, prompts, responses, **kw) -> list[MicroBatch]:
        """Packed by the token budget; padded to it under PP (megatron sends fixed shapes); on the model's device."""
        return pack(prompts, responses, self.budget, pad_to=self.budget if self.dims.pp > 1 else 0,
                    device=self.dims.device, **kw)


# ---- pieces of a step -----------------------------------------------------------------------


def _rollout(ctx: StepContext, batch: Batch, step: int, n: int):
    """n samples per prompt; calls of k prompts seeded by the global index of their first prompt."""
    st = ctx.stages
    k = st.rollout_prompts_per_call or len(batch.prompts)
    responses, finished = [], []
    with ctx.timed("rollout"):
        ctx.sync_weights()
        for c in range(0, len(batch.prompts), k):
            rep = [p for p in batch.prompts[c : c + k] for _ in range(n)]
            roll = ctx.engine.generate(rep, max_new_tokens=st.max_response_len, temperature=st.temperature,
                                       eos_ids=ctx.eos_ids, seed=ctx.sample_seed + 1009 * step + batch.first + c)
            responses += roll.responses
            finished += roll.finished
        release(ctx.engine)  # the KV cache and the gathered weights are not needed until the next rollout
    ctx.note("sample")
    return [p for p in batch.prompts for _ in range(n)], responses, finished


def _d_pack(ctx: StepContext, batch: Batch, responses: list[list[int]], n: int) -> list[MicroBatch]:
    """Each prompt's teacher reply and its n samples packed together (teacher first)."""
    prompts, resps, groups, is_t = [], [], [], []
    for p, prompt in enumerate(batch.prompts):
        prompts += [prompt] * (n + 1)
        resps += [batch.teacher[p]] + responses[p * n : (p + 1) * n]
        groups += [p] * (n + 1)
        is_t += [1] + [0] * n
    mbs = ctx.pack(prompts, resps, groups=groups)
    dev = ctx.dims.device
    for mb in mbs:  # BT's gather indices, from host lists (see player._bt_step)
        local = {g: j for j, g in enumerate(dict.fromkeys(groups[i] for i in mb.seqs))}
        teacher_G = [0] * len(local)
        student_M, group_M = [], []
        for d, i in enumerate(mb.seqs):
            if is_t[i]:
                teacher_G[local[groups[i]]] = d
            else:
                student_M.append(d)
                group_M.append(local[groups[i]])
        mb.index = {k: torch.tensor(v, dtype=torch.long).to(dev) for k, v in
                    (("teacher_G", teacher_G), ("student_M", student_M), ("group_M", group_M))}
    return mbs


def implicit_d(ctx: StepContext) -> bool:
    """Whether D is the implicit-reward kind (player.ImplicitReward): its scores need a reference."""
    return ctx.disc is not None and ctx.disc.implicit is not None


def with_ref(mbs: list[MicroBatch], ref_N: torch.Tensor) -> list[MicroBatch]:
    """Attach each packed sequence's reference log-likelihood (``ref_N`` in the caller's order) as
    per_seq["ref"]: the implicit D scores beta * (its own log-likelihood - this)."""
    for mb in mbs:
        mb.per_seq["ref"] = ref_N.index_select(0, mb.seq_N.to(ref_N.device)).to(mb.mask_T.device)
    return mbs


def _d_update(ctx: StepContext, batch: Batch, responses: list[list[int]], mbs: list[MicroBatch] | None = None) -> dict[str, Any]:
    """D's Bradley-Terry step on the step's pairs; ``mbs``: the pairs already packed by ``_d_pack``
    (with per_seq["ref"] for the implicit D)."""
    n = ctx.stages.n_samples
    u = ctx.disc.train_bt(mbs if mbs is not None else _d_pack(ctx, batch, responses, n), pairs=batch.global_prompts * n)
    ctx.note("d_update")
    return {"loss/d": u.loss, "d_acc/train_post": u.extra["correct"], "grad_norm/d": u.grad_norm, "skipped/d": u.skipped}


def _sft_update(ctx: StepContext, batch: Batch) -> dict[str, Any]:
    u = ctx.student.train_sft(ctx.pack(batch.prompts, batch.teacher))
    ctx.note("g_sft_update")
    return {"loss/g_ce": u.loss, "grad_norm/g": u.grad_norm, "skipped/g": u.skipped}


def _grpo_update(ctx: StepContext, prompts, responses, adv_S: torch.Tensor, old, ref) -> dict[str, Any]:
    mbs = ctx.pack(prompts, responses, per_token={
        "adv": [adv_S[i].expand(len(r)) for i, r in enumerate(responses)], "ref": ref,
        **({"old": old} if old is not None else {})})  # no "old": on-policy, see gad_step
    u = ctx.student.train_grpo(mbs, gad=ctx.stages.gad, temperature=ctx.stages.temperature)
    ctx.note("g_update")
    return {"loss/g_pg": u.loss, "grad_norm/g": u.grad_norm, "skipped/g": u.skipped, **u.extra}


def _student_logliks(ctx: StepContext, batch: Batch, prompts, responses, old) -> tuple[torch.Tensor, torch.Tensor]:
    """(logS_teacher_P, logS_samples_S): the current student's log-likelihood of the teacher replies
    and of the samples at the sampling temperature, for the oracle diagnostics of a score-head D (the
    implicit D's step has them already). The teacher replies cost one forward of P sequences; the
    samples reuse the old log-probs, or cost a forward when the on-policy step skipped them."""
    G, temp = ctx.student, ctx.stages.temperature
    mbs = ctx.pack(batch.prompts, batch.teacher)
    lt = G.token_logprobs(mbs, len(batch.prompts), temperature=temp)
    logS_t = torch.stack([x.sum() for x in lt])
    if old is None:  # skipped by the on-policy step: the samples' log-likelihood costs a forward here
        old = G.token_logprobs(ctx.pack(prompts, responses), len(prompts), temperature=temp)
    return logS_t, torch.stack([x.sum() for x in old])


def _diagnostics(ctx: StepContext, batch: Batch, prompts, responses, old, d_teacher_P, d_student_PN, reward_PN,
                 logS=None):
    """Oracle diagnostics of a GAD step (oracle.gad_diagnostics); ``logS``: _student_logliks when the
    step already has them (the implicit D), else computed here."""
    from .oracle import gad_diagnostics

    with ctx.timed("diagnostics"):
        logS_t, logS_s = logS if logS is not None else _student_logliks(ctx, batch, prompts, responses, old)
        return gad_diagnostics(ctx.oracle, batch.prompts, batch.teacher, prompts, responses, logS_s, logS_t,
                               d_teacher_P, d_student_PN, reward_PN)


def _tokens(prompts, responses) -> int:
    return sum(len(p) + len(r) for p, r in zip(prompts, responses))


# ---- the stages -----------------------------------------------------------------------------


def seqkd_step(ctx: StepContext, batch: Batch, step: int) -> dict[str, Any]:
    with ctx.timed("update"):
        m = _sft_update(ctx, batch)
    return {**m, **dp_mean(ctx.dims, {"len/teacher": sum(map(len, batch.teacher)) / len(batch.teacher),
                                      "tokens": ctx.dims.dp * _tokens(batch.prompts, batch.teacher)})}


def warmup_step(ctx: StepContext, batch: Batch, step: int, *, d_only: bool, g_only: bool = False) -> dict[str, Any]:
    n = ctx.stages.n_samples
    local = {"len/teacher": sum(map(len, batch.teacher)) / len(batch.teacher), "tokens": 0}
    m: dict[str, Any] = {}
    if not g_only:  # g_only: no D update at this step (D not started yet, or between its d_every updates)
        # D trains on stages.prompts_per_step prompts (every m-th of a larger SFT batch): all of
        # them would make every D step a rollout of sft_prompts_per_step x n_samples
        d_batch = batch.every(batch.global_prompts // ctx.stages.prompts_per_step)
        prompts, responses, finished = _rollout(ctx, d_batch, step, n)
        dmbs = _d_pack(ctx, d_batch, responses, n)
        if implicit_d(ctx):  # the reference: the current student, on the same packed pairs (one forward)
            with ctx.timed("scoring"):
                with_ref(dmbs, ctx.student.seq_logprobs(dmbs, len(d_batch.prompts) * (n + 1), temperature=ctx.stages.temperature))
        with ctx.timed("update"):
            m = _d_update(ctx, d_batch, responses, dmbs)
        local.update({"len/student": sum(map(len, responses)) / len(responses),
                      "tokens": _tokens(prompts, responses) + _tokens(d_batch.prompts, d_batch.teacher),
                      "tokens_generated": sum(map(len, responses))})
    if not d_only:
        with ctx.timed("update"):
            m.update(_sft_update(ctx, batch))
        local["tokens"] += _tokens(batch.prompts, batch.teacher)
    local = {k: v * ctx.dims.dp if k.startswith("tokens") else v for k, v in local.items()}
    return {**m, **dp_mean(ctx.dims, local)}


def gad_step(ctx: StepContext, batch: Batch, step: int, *, update_d: bool = True) -> dict[str, Any]:
    n, P, temp = ctx.stages.n_samples, len(batch.prompts), ctx.stages.temperature
    G, R, D, dims = ctx.student, ctx.ref, ctx.disc, ctx.dims
    # 1. sample N responses per prompt from the current student
    prompts, responses, finished = _rollout(ctx, batch, step, n)
    with ctx.timed("scoring"):
        mbs = ctx.pack(prompts, responses)
        # 2. old log-probs under the current student (fused, no grad). With one policy update per
        # rollout they are the update's own log-probs, so (as verl and TRL do) that forward is skipped
        old = None
        if ctx.stages.gad.policy_epochs > 1:
            old = G.token_logprobs(mbs, len(prompts), temperature=temp)
            ctx.note("old_logprobs")
        # 3. reference log-probs under the frozen warmup-end student
        ref = R.token_logprobs(mbs, len(prompts), temperature=temp)
        ctx.note("ref_logprobs")
        # 4. D scores the samples (and the teacher replies) before its update. The implicit D's
        # reference is the current student S_t: D = beta * (log P_theta - log S_t), in its scores and
        # its BT update alike. S_t's log-likelihoods: one forward over D's own packed pairs (the same
        # rows as D's, so a D equal to S_t scores exactly 0, not float noise that the group
        # normalisation of the advantages would blow up), shared with the diagnostics
        dmbs = _d_pack(ctx, batch, responses, n)
        logS = None
        if implicit_d(ctx):
            ref_P1 = G.seq_logprobs(dmbs, P * (n + 1), temperature=temp)
            with_ref(dmbs, ref_P1)
            logS = (ref_P1.view(P, n + 1)[:, 0], ref_P1.view(P, n + 1)[:, 1:].flatten())
            ctx.note("student_logliks")
        scores_P1 = D.scores(dmbs, P * (n + 1))
        d_teacher_P, d_student_PN = scores_P1.view(P, n + 1)[:, 0], scores_P1.view(P, n + 1)[:, 1:]
        if ctx.d_scores is not None:
            d_teacher_P, d_student_PN = (x.to(d_student_PN) for x in ctx.d_scores(batch, prompts, responses))
        ctx.note("d_score")
        reward_PN = d_student_PN
        if ctx.stages.gad.reward_per_token:  # a summed score over |y|: no reward for length alone
            len_PN = torch.tensor([len(r) for r in responses], dtype=reward_PN.dtype, device=reward_PN.device)
            reward_PN = reward_PN / len_PN.clamp(min=1).view(P, n)
        if ctx.stages.gad.reward == "oracle":  # the exact teacher log-likelihood per token: the ceiling arm
            reward_PN = ctx.oracle.reward(prompts, responses).to(d_student_PN.device).view(P, n)
        # 5. group-normalised advantages, the same on every token of a response
        adv_PN = group_advantages(reward_PN, norm=ctx.stages.gad.adv_norm)
        ctx.note("advantages")
    exact = ctx.oracle is not None and ctx.oracle.exact  # the embedded world's oracle (lm_oracle: reward only)
    diag = _diagnostics(ctx, batch, prompts, responses, old, d_teacher_P, d_student_PN, reward_PN, logS) if exact else {}
    with ctx.timed("update"):
        # 6. D update: Bradley-Terry on (teacher reply, each sample); skipped for the frozen-D ablation
        m = _d_update(ctx, batch, responses, dmbs) if update_d else {}
        # 7. G update: clipped surrogate + k3 KL, token-mean over all ranks
        # (policy_epochs > 1: again on the same samples and old log-probs; metrics are the last
        # update's, skipped/g is whether any was skipped)
        skipped = False
        for _ in range(ctx.stages.gad.policy_epochs):
            m.update(_grpo_update(ctx, prompts, responses, adv_PN.flatten(), old, ref))
            skipped = skipped or m["skipped/g"]
        m["skipped/g"] = skipped
    return {**m, **dp_mean(dims, {
        **diag, "reward/mean": reward_PN.mean(), "reward/std": reward_PN.std(dim=1).mean(),
        "d_acc/train": pairwise_acc(d_teacher_P, d_student_PN), "loss/d_pre": bt_loss(d_teacher_P, d_student_PN),
        "truncated_frac": 1.0 - sum(finished) / len(finished),
        "len/student": sum(map(len, responses)) / len(responses),
        "len/teacher": sum(map(len, batch.teacher)) / len(batch.teacher),
        # trained tokens (G update, D update) and sampled tokens, summed over DP ranks by dp_mean * dp
        "tokens": dims.dp * (_tokens(prompts, responses) + update_d * (_tokens(prompts, responses) + _tokens(batch.prompts, batch.teacher))),
        "tokens_generated": dims.dp * sum(map(len, responses)),
    })}
