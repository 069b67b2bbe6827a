"""One training step of each stage, on packed micro-batches through megatron's schedule.

    m = seqkd_step(ctx, batch)   # CE on teacher replies
    m = warmup_step(ctx, batch)  # D Bradley-Terry on (teacher, N fresh samples); G CE unless D-only
    m = gad_step(ctx, batch)     # the GAD step below, in the paper's order

Every function returns a dict of metrics whose values may be 0-d tensors (the
logger converts them once per logged step). ``ctx`` is a ``StepContext``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from gadx.kernels import grpo_loss, token_logprobs

from .engine import Player, scaled_normalizer
from .losses import bt_loss, chunked_nll_sum, group_advantages, pairwise_acc
from .packing import MicroBatch, global_token_count, pack, unpack_tokens


@dataclass
class Batch:
    """This rank's slice of a step: P prompts with their teacher replies (token ids)."""

    prompts: list[list[int]]
    teacher: list[list[int]]
    teacher_finished: list[bool]
    global_prompts: int  # P over all DP ranks
    teacher_wait_s: float = 0.0
    teacher_cost_usd: float = 0.0


@dataclass
class StepContext:
    student: Player
    disc: Player | None
    ref: Player | None
    engine: Any  # RolloutEngine
    sync_weights: Callable[[], None]  # student weights -> engine
    eos_ids: list[int]
    stages: Any  # config.StagesCfg
    budget: int  # micro-batch token budget
    dp: int
    dp_group: Any = None
    sample_seed: int = 0
    recorder: list[str] | None = None  # order-of-operations log (tests)
    times: dict[str, float] = field(default_factory=dict)

    def note(self, what: str) -> None:
        if self.recorder is not None:
            self.recorder.append(what)

    @contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


# ---- forward_step factories (megatron's forward_step_func, micro-batch given) ---------------


def _hidden(chunk, mb: MicroBatch) -> torch.Tensor:
    return chunk(mb.input_ids_1T, mb.position_ids_1T, mb.doc_ids_1T)


def _logprob_step(model, temperature: float):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            logp_T = token_logprobs(hidden_1TH[0], model.head_weight, mb.targets_T, temperature=temperature)
            return hidden_1TH.new_zeros(()), {"logp": logp_T * mb.mask_T}
        return _hidden(chunk, mb), loss_func
    return fs


def _score_step(model):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            scores_N = model.score_hidden(hidden_1TH[0][mb.last_idx_N])
            return hidden_1TH.new_zeros(()), {"scores": scores_N.detach()}
        return _hidden(chunk, mb), loss_func
    return fs


def _bt_step(model, norm: torch.Tensor):
    """BT loss on micro-batches packed by group: per_seq "group" (local id) and "teacher" (0/1)."""
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            s_N = model.score_hidden(hidden_1TH[0][mb.last_idx_N])
            g_N, is_t = mb.per_seq["group"], mb.per_seq["teacher"].bool()
            t_score_G = torch.zeros(int(g_N.max()) + 1, dtype=s_N.dtype).index_put((g_N[is_t],), s_N[is_t])
            t_N, st_N = t_score_G[g_N][~is_t], s_N[~is_t]
            loss_sum = -torch.nn.functional.logsigmoid(t_N - st_N).sum()
            correct = (t_N > st_N).float().sum().detach()
            return loss_sum / norm, {"loss_sum": loss_sum.detach(), "correct": correct, "pairs": torch.tensor(float(st_N.numel()))}
        return _hidden(chunk, mb), loss_func
    return fs


def _sft_step(model, norm: torch.Tensor):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            nll_sum = chunked_nll_sum(hidden_1TH[0], model.head_weight, mb.targets_T, mb.mask_T)
            return nll_sum / norm, {"nll_sum": nll_sum.detach(), "tokens": mb.mask_T.sum()}
        return _hidden(chunk, mb), loss_func
    return fs


def _grpo_step(model, norm: torch.Tensor, st, temperature: float):
    g = st.gad

    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            loss, m = grpo_loss(
                hidden_1TH[0], model.head_weight, mb.targets_T, mb.per_token["adv"], mb.per_token["old"],
                mb.per_token["ref"], mb.mask_T, clip_low=g.clip_low, clip_high=g.clip_high, dual_clip=g.dual_clip,
                kl_coef=g.kl_coef, temperature=temperature, normalizer=norm,
            )
            n = mb.mask_T.sum()
            out = {k: v.detach() * n for k, v in m.items()}  # token-weighted, averaged in _reduce
            out.update(loss=loss.detach(), tokens=n)
            return loss, out
        return _hidden(chunk, mb), loss_func
    return fs


# ---- helpers --------------------------------------------------------------------------------


def _allreduce_sum(x: torch.Tensor, group) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(x, group=group)
    return x


def _sum(outs: list[dict], key: str) -> torch.Tensor:
    return torch.stack([o[key].float() for o in outs]).sum()


def _per_seq(mbs: list[MicroBatch], outs: list[dict], key: str, n: int) -> torch.Tensor:
    out = torch.empty(n)
    for mb, o in zip(mbs, outs):
        out[mb.seq_N] = o[key].float()
    return out


def _rollout(ctx: StepContext, prompts: list[list[int]], step: int):
    st = ctx.stages
    with ctx.timed("rollout"):
        ctx.sync_weights()
        rep = [p for p in prompts for _ in range(st.n_samples)]
        roll = ctx.engine.generate(rep, max_new_tokens=st.max_response_len, temperature=st.temperature,
                                   eos_ids=ctx.eos_ids, seed=ctx.sample_seed + step)
    ctx.note("sample")
    return rep, roll


def _d_pack(batch: Batch, responses: list[list[int]], n: int, budget: int) -> tuple[list[MicroBatch], list[int]]:
    """Each prompt's teacher reply and its n samples packed together (teacher first)."""
    prompts, resps, groups, is_t = [], [], [], []
    for p, prompt in enumerate(batch.prompts):
        prompts += [prompt] * (n + 1)
        resps += [batch.teacher[p]] + responses[p * n : (p + 1) * n]
        groups += [p] * (n + 1)
        is_t += [1] + [0] * n
    mbs = pack(prompts, resps, budget, groups=groups,
               per_seq={"group": torch.tensor(groups), "teacher": torch.tensor(is_t)})
    for mb in mbs:  # local group ids so the BT step can index a small table
        _, mb.per_seq["group"] = torch.unique(mb.per_seq["group"], return_inverse=True)
    return mbs, is_t


def _d_update(ctx: StepContext, batch: Batch, responses: list[list[int]]) -> dict[str, Any]:
    n = ctx.stages.n_samples
    mbs, _ = _d_pack(batch, responses, n, ctx.budget)
    pairs = torch.tensor(float(batch.global_prompts * n))
    outs = ctx.disc.run(mbs, _bt_step(ctx.disc.model, scaled_normalizer(pairs, ctx.dp, len(mbs))))
    loss = _allreduce_sum(_sum(outs, "loss_sum"), ctx.dp_group) / pairs
    acc = _allreduce_sum(_sum(outs, "correct"), ctx.dp_group) / pairs
    applied, gnorm = ctx.disc.step(loss)
    ctx.note("d_update")
    return {"loss/d": loss, "d_acc/train_post": acc, "grad_norm/d": gnorm, "skipped/d": not applied}


def _sft_update(ctx: StepContext, batch: Batch) -> dict[str, Any]:
    mbs = pack(batch.prompts, batch.teacher, ctx.budget)
    norm = global_token_count(mbs, ctx.dp_group)
    outs = ctx.student.run(mbs, _sft_step(ctx.student.model, scaled_normalizer(norm, ctx.dp, len(mbs))))
    loss = _allreduce_sum(_sum(outs, "nll_sum"), ctx.dp_group) / norm.clamp(min=1)
    applied, gnorm = ctx.student.step(loss)
    ctx.note("g_sft_update")
    return {"loss/g_ce": loss, "grad_norm/g": gnorm, "skipped/g": not applied}


def _lengths(batch: Batch, responses: list[list[int]]) -> dict[str, Any]:
    return {
        "len/student": sum(map(len, responses)) / max(len(responses), 1),
        "len/teacher": sum(map(len, batch.teacher)) / max(len(batch.teacher), 1),
    }


# ---- the stages -----------------------------------------------------------------------------


def seqkd_step(ctx: StepContext, batch: Batch, step: int) -> dict[str, Any]:
    with ctx.timed("update"):
        m = _sft_update(ctx, batch)
    return {**m, "len/teacher": sum(map(len, batch.teacher)) / len(batch.teacher)}


def warmup_step(ctx: StepContext, batch: Batch, step: int, *, d_only: bool, g_only: bool = False) -> dict[str, Any]:
    if g_only:  # a from-scratch student learns to talk before D is copied from it
        with ctx.timed("update"):
            return {**_sft_update(ctx, batch), "len/teacher": sum(map(len, batch.teacher)) / len(batch.teacher)}
    _, roll = _rollout(ctx, batch.prompts, step)
    with ctx.timed("update"):
        m = _d_update(ctx, batch, roll.responses)
        if not d_only:
            m.update(_sft_update(ctx, batch))
    return {**m, **_lengths(batch, roll.responses)}


def gad_step(ctx: StepContext, batch: Batch, step: int, *, update_d: bool = True) -> dict[str, Any]:
    st, n, P = ctx.stages, ctx.stages.n_samples, len(batch.prompts)
    temp = st.temperature
    # 1. sample N responses per prompt from the current student
    rep, roll = _rollout(ctx, batch.prompts, step)
    responses = roll.responses
    with ctx.timed("scoring"):
        mbs = pack(rep, responses, ctx.budget)
        # 2. old log-probs under the current student (fused, no grad)
        old = unpack_tokens(mbs, [o["logp"] for o in ctx.student.run(mbs, _logprob_step(ctx.student.model, temp), forward_only=True)], len(rep))
        ctx.note("old_logprobs")
        # 3. reference log-probs under the frozen warmup-end student
        ref = unpack_tokens(mbs, [o["logp"] for o in ctx.ref.run(mbs, _logprob_step(ctx.ref.model, temp), forward_only=True)], len(rep))
        ctx.note("ref_logprobs")
        # 4. D scores the samples (and the teacher replies) before its update
        dmbs, is_t = _d_pack(batch, responses, n, ctx.budget)
        scores = _per_seq(dmbs, ctx.disc.run(dmbs, _score_step(ctx.disc.model), forward_only=True), "scores", len(is_t))
        ctx.note("d_score")
        scores_P1 = scores.view(P, n + 1)
        d_teacher_P, reward_PN = scores_P1[:, 0], scores_P1[:, 1:]
        # 5. group-normalised advantages, the same on every token of a response
        adv_PN = group_advantages(reward_PN)
        ctx.note("advantages")
    with ctx.timed("update"):
        # 6. D update: Bradley-Terry on (teacher reply, each sample)
        m = _d_update(ctx, batch, responses) if update_d else {}
        # 7. G update: clipped surrogate + k3 KL, token-mean over all ranks
        gm = pack(rep, responses, ctx.budget, per_token={
            "adv": [adv_PN.flatten()[i].expand(len(r)) for i, r in enumerate(responses)], "old": old, "ref": ref,
        })
        norm = global_token_count(gm, ctx.dp_group)
        outs = ctx.student.run(gm, _grpo_step(ctx.student.model, scaled_normalizer(norm, ctx.dp, len(gm)), st, temp))
        tokens = _allreduce_sum(_sum(outs, "tokens"), ctx.dp_group).clamp(min=1)
        # each micro-batch loss is sum/global * dp * n_mb (see engine.scaled_normalizer)
        loss = _allreduce_sum(torch.stack([o["loss"] for o in outs]).sum() / (ctx.dp * len(gm)), ctx.dp_group)
        applied, gnorm = ctx.student.step(loss)
        ctx.note("g_update")
    m.update({
        "loss/g_pg": loss, "grad_norm/g": gnorm, "skipped/g": not applied,
        "reward/mean": reward_PN.mean(), "reward/std": reward_PN.std(dim=1).mean(),
        "d_acc/train": pairwise_acc(d_teacher_P, reward_PN), "loss/d_pre": bt_loss(d_teacher_P, reward_PN),
        "kl": _allreduce_sum(_sum(outs, "kl"), ctx.dp_group) / tokens,
        "clip_frac": _allreduce_sum(_sum(outs, "clip_frac"), ctx.dp_group) / tokens,
        "truncated_frac": 1.0 - sum(roll.finished) / len(roll.finished),
        **_lengths(batch, responses),
    })
    if "entropy" in outs[0]:
        m["entropy"] = _allreduce_sum(_sum(outs, "entropy"), ctx.dp_group) / tokens
    return m
