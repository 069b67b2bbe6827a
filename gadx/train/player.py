"""A model the trainer drives, with plain verbs: score, take log-probs, train one step.

    G = Player(student, lr=1e-6, weight_decay=0.01, clip_grad=0.2)   # megatron DDP + distributed optimizer
    R = Player(frozen_copy, trainable=False)                          # forward only: no DDP, no grad buffers
    old = G.token_logprobs(mbs, S, temperature=0.8)   # [L] per sequence: its response tokens' log-probs
    d_N = D.scores(mbs, N)                            # [N] one scalar per packed sequence (score head)
    lp_N = G.seq_logprobs(mbs, N, temperature=0.8)    # [N] sum of each sequence's response-token log-probs
    D = Player(lm_copy, lr=3e-4, implicit=ImplicitReward(beta=1.0, temperature=0.8))   # the implicit-reward D:
    d_N = D.scores(mbs, N)                            #   beta * (its log-prob sums - mb.per_seq["ref"])
    u = G.train_sft(mbs)                              # CE on the response tokens, then an optimizer step
    u = D.train_bt(mbs, pairs=P * n)                  # Bradley-Terry: teacher reply over each sample
    u = G.train_grpo(mbs, gad=cfg.stages.gad, temperature=0.8)   # clipped surrogate + k3 KL
    u.loss, u.grad_norm, u.skipped, u.extra

Each verb runs the packed micro-batches (gadx.train.packing) through megatron's schedule
(gadx.parallel.forward_backward) with a forward step made here: the model's hidden states, then on
the last pipeline stage a "loss function" on them (gadx.train.heads -> gadx.kernels). The
schedule returns those outputs on the last stage only ([] elsewhere); the verbs broadcast them
over the pipeline group (``_from_last_stage``) and sum over data-parallel ranks, so every rank
gets the same numbers and takes the same branches. All of it stays on the device: the one
host sync of a training verb is ``step``'s finite check.

Loss normalisation: megatron divides each micro-batch loss by the number of micro-batches and
DDP averages gradients over data-parallel ranks, so a loss that should be ``sum(token terms) /
global_count`` is given the normaliser ``global_count / (dp * num_microbatches)``
(``scaled_normalizer``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from gadx.parallel import build_optimizer, forward_backward, wrap_ddp

from . import heads
from .packing import MicroBatch, global_token_count, unpack_tokens


@dataclass
class Update:
    """What a training verb did: the loss (0-d tensor), the gradient norm (nan when skipped),
    whether the optimizer step was skipped (non-finite loss or gradients) and verb-specific sums."""

    loss: torch.Tensor
    grad_norm: float
    skipped: bool
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def scaled_normalizer(global_count: torch.Tensor, dp: int, num_microbatches: int) -> torch.Tensor:
    """The per-micro-batch normaliser that makes megatron's averaging yield sum / global_count."""
    return global_count.clamp(min=1.0) / (dp * num_microbatches)


@dataclass(frozen=True)
class ImplicitReward:
    """A discriminator of the implicit-reward kind: D(x, y) = beta * [log P_theta(y|x) - ref(x, y)],
    P_theta the player's own LM (summed over the reply's tokens at ``temperature``) and ref the
    reference log-likelihood of the same sequence, handed in per sequence as ``mb.per_seq["ref"]``
    (the trainer's: the current student's; step.py ``_with_ref``)."""

    beta: float
    temperature: float


class Player:
    def __init__(self, model, *, lr: float = 0.0, weight_decay: float = 0.0, clip_grad: float = 0.0, trainable: bool = True,
                 implicit: ImplicitReward | None = None):
        self.model = model
        self.dims = model.dims
        self.implicit = implicit  # None: the score head (a D) or no D at all
        self.opt = None
        if trainable:
            self.chunks = wrap_ddp([model])
            self.opt = build_optimizer(self.chunks, lr=lr, weight_decay=weight_decay, clip_grad=clip_grad)
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            self.chunks = [model]  # no DDP, no grad buffers: forward_backward presents it to the schedule

    # ---- the verbs ------------------------------------------------------------------------------

    def token_logprobs(self, mbs: list[MicroBatch], n: int, *, temperature: float) -> list[torch.Tensor]:
        """Log-probs of each of the n packed sequences' response tokens ([L] each, fp32, no grad), on every rank."""
        outs = self.run(mbs, _logprob_step(self.model, temperature), forward_only=True)
        return _token_values(self.dims, mbs, outs, "logp", n)

    def seq_logprobs(self, mbs: list[MicroBatch], n: int, *, temperature: float) -> torch.Tensor:
        """[n] each packed sequence's sum of response-token log-probs (fp32, no grad, fused), on every rank."""
        outs = self.run(mbs, _seq_logprob_step(self.model, temperature), forward_only=True)
        return _seq_values(self.dims, mbs, outs, "logp", n)

    def scores(self, mbs: list[MicroBatch], n: int) -> torch.Tensor:
        """[n] a discriminator's score of each packed sequence, on every rank: the score head at its
        last token, or (``implicit``) beta * (its reply log-likelihood - mb.per_seq["ref"])."""
        if self.implicit is not None:
            im = self.implicit
            outs = self.run(mbs, _seq_logprob_step(self.model, im.temperature, beta=im.beta), forward_only=True)
            return _seq_values(self.dims, mbs, outs, "logp", n)
        outs = self.run(mbs, _score_step(self.model), forward_only=True)
        return _seq_values(self.dims, mbs, outs, "scores", n)

    def train_sft(self, mbs: list[MicroBatch]) -> Update:
        """One SFT step: token-mean CE over every rank's response tokens, then the optimizer step."""
        dims = self.dims
        norm = global_token_count(mbs, dims.dp_group, dims.device)
        outs = self.run(mbs, _sft_step(self.model, scaled_normalizer(norm, dims.dp, len(mbs))))
        loss = _stage_sums(dims, outs, ("nll_sum",))["nll_sum"] / norm.clamp(min=1)
        return self._update(loss)

    def train_bt(self, mbs: list[MicroBatch], *, pairs: int) -> Update:
        """One Bradley-Terry step, -logsigmoid(D(teacher) - D(sample)) averaged over the step's ``pairs``
        (all ranks), on micro-batches packed by group with their gather indices (step.py ``_d_pack``;
        ``implicit``: with per_seq["ref"], the gradient through D's reply log-likelihood sums).
        ``extra["correct"]``: the fraction of pairs ranked right before the update."""
        dims = self.dims
        pairs_t = torch.tensor(float(pairs), device=dims.device)
        outs = self.run(mbs, _bt_step(self.model, scaled_normalizer(pairs_t, dims.dp, len(mbs)), self.implicit))
        s = _stage_sums(dims, outs, ("loss_sum", "correct"))
        return self._update(s["loss_sum"] / pairs_t, correct=s["correct"] / pairs_t)

    def train_grpo(self, mbs: list[MicroBatch], *, gad, temperature: float) -> Update:
        """One GRPO step on micro-batches with per-token "adv", "ref" and "old" (absent: on-policy, the
        ratio against this pass's own log-probs; gadx.kernels.grpo_loss): the clipped surrogate
        plus k3 KL (``gad``: config.GadCfg's clip_low/high, dual_clip, kl_coef), token-mean over every
        rank. ``extra``: token means of kl, clip_frac, entropy, ratio."""
        dims = self.dims
        norm = global_token_count(mbs, dims.dp_group, dims.device).clamp(min=1)
        outs = self.run(mbs, _grpo_step(self.model, scaled_normalizer(norm, dims.dp, len(mbs)), gad, temperature))
        s = _stage_sums(dims, outs, ("pg_sum", "kl", "clip_frac", "entropy", "ratio"))
        return self._update(s["pg_sum"] / norm, **{k: s[k] / norm for k in ("kl", "clip_frac", "entropy", "ratio")})

    # ---- the machinery under the verbs ------------------------------------------------------------

    def run(self, mbs: list[MicroBatch], forward_step: Callable[[MicroBatch, Any], tuple], *, forward_only: bool = False) -> list[dict]:
        """megatron's schedule over the micro-batches; ``forward_step(mb, chunk) -> (output, loss_func)``
        is megatron's forward_step_func with the micro-batch already taken from the iterator."""
        assert mbs, "no micro-batches"
        assert forward_only or self.opt is not None, "a frozen player runs forward only"

        def fs(data_iterator, chunk):
            return forward_step(next(data_iterator), chunk)

        T = mbs[0].num_tokens
        assert self.model.dims.pp == 1 or all(mb.num_tokens == T for mb in mbs), "PP needs fixed-shape micro-batches"
        ctx = torch.no_grad() if forward_only else torch.enable_grad()
        with ctx:
            return forward_backward(
                self.chunks, fs, iter(mbs), num_microbatches=len(mbs),
                seq_length=max(mb.num_tokens for mb in mbs), micro_batch_size=1,
                forward_only=forward_only, optimizer=self.opt,
            )

    def _update(self, loss: torch.Tensor, **extra: torch.Tensor) -> Update:
        applied, grad_norm = self.step(loss)
        return Update(loss, grad_norm, not applied, extra)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def grads_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """0-d bool tensor: loss and every local gradient finite on every rank (one all-reduce)."""
        bad = (~torch.isfinite(loss.detach().float())).float().reshape(1)
        for c in self.chunks:
            for buf in c.buffers:
                bad = bad + (~torch.isfinite(buf.grad_data)).any().float()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bad)
        return bad[0] == 0

    def step(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Optimizer step unless loss/grads are non-finite. The one host sync of a training step."""
        if not bool(self.grads_finite(loss)):
            self.opt.zero_grad()
            return False, float("nan")
        ok, grad_norm, _ = self.opt.step()
        return bool(ok), float(grad_norm) if grad_norm is not None else float("nan")


# ---- forward steps (megatron's forward_step_func, micro-batch given) ------------------------------
# loss_func runs on the last pipeline stage only.


def _hidden(chunk, mb: MicroBatch) -> torch.Tensor:
    return chunk(mb.input_ids_1T, mb.position_ids_1T, packed_seq_params=mb.packed)


def _logprob_step(model, temperature: float):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            logp_T, _ = heads.token_logprobs(model, hidden_1TH[0], mb.targets_T, temperature=temperature)
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


def _seq_logprob_step(model, temperature: float, beta: float | None = None):
    """Per-sequence sums of response-token log-probs; with ``beta``: beta * (sums - per_seq["ref"])."""
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            lp_N = heads.seq_logprob_sums_nograd(model, hidden_1TH[0], mb.targets_T, mb.mask_T, mb.doc_ids_1T[0],
                                                 len(mb.seqs), temperature=temperature)
            if beta is not None:
                lp_N = beta * (lp_N - mb.per_seq["ref"])
            return hidden_1TH.new_zeros(()), {"logp": lp_N}
        return _hidden(chunk, mb), loss_func
    return fs


def _bt_step(model, norm: torch.Tensor, implicit: ImplicitReward | None = None):
    """BT loss on micro-batches packed by group: index "teacher_G" (each local group's teacher
    reply), "student_M" (the samples, in packed order) and "group_M" (each sample's group).
    Index tensors built on the host, not boolean masks: no nonzero(), so no host sync in the loss.
    D's score per sequence: the score head at its last token, or (implicit) beta * (the sum of its
    reply's token log-probs at the sampling temperature, with grad - the reference's, per_seq["ref"])."""
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            if implicit is None:
                s_N = model.score_hidden(hidden_1TH[0][mb.last_idx_N])
            else:
                lp_N = heads.seq_logprob_sums(model, hidden_1TH[0], mb.targets_T, mb.mask_T, mb.doc_ids_1T[0],
                                              len(mb.seqs), temperature=implicit.temperature)
                s_N = implicit.beta * (lp_N - mb.per_seq["ref"])
            t_score_G = s_N.index_select(0, mb.index["teacher_G"])
            t_N, st_N = t_score_G.index_select(0, mb.index["group_M"]), s_N.index_select(0, mb.index["student_M"])
            loss_sum = -torch.nn.functional.logsigmoid(t_N - st_N).sum()
            correct = (t_N > st_N).float().sum().detach()
            return loss_sum / norm, {"loss_sum": loss_sum.detach(), "correct": correct}
        return _hidden(chunk, mb), loss_func
    return fs


def _sft_step(model, norm: torch.Tensor):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            nll_sum = heads.nll_sum(model, hidden_1TH[0], mb.targets_T, mb.mask_T)
            return nll_sum / norm, {"nll_sum": nll_sum.detach()}
        return _hidden(chunk, mb), loss_func
    return fs


def _grpo_step(model, norm: torch.Tensor, g, temperature: float):
    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            loss, m = heads.grpo_loss(
                model, hidden_1TH[0], mb.targets_T, mb.per_token["adv"], mb.per_token.get("old"), mb.per_token["ref"],
                mb.mask_T, clip_low=g.clip_low, clip_high=g.clip_high, dual_clip=g.dual_clip, kl_coef=g.kl_coef,
                temperature=temperature, normalizer=norm, compute_entropy=True,
            )
            n = mb.mask_T.sum()
            # token-weighted sums; divided by the global token count after the step
            return loss, {"pg_sum": loss.detach() * norm, **{k: v.detach() * n for k, v in m.items()}}
        return _hidden(chunk, mb), loss_func
    return fs


# ---- last pipeline stage -> every stage; sums over data parallel --------------------------------


def _from_last_stage(dims, x: torch.Tensor) -> torch.Tensor:
    if dims.pp > 1:
        from megatron.core import parallel_state as ps

        dist.broadcast(x, src=ps.get_pipeline_model_parallel_last_rank(), group=dims.pp_group)
    return x


def _dp_sum(dims, x: torch.Tensor) -> torch.Tensor:
    if dims.dp > 1:
        dist.all_reduce(x, group=dims.dp_group)
    return x


def _stage_sums(dims, outs: list[dict], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Each key summed over this rank's micro-batches and the DP ranks, one collective each way."""
    if dims.is_last_stage:
        v_K = torch.stack([torch.stack([o[k].float().sum() for o in outs]).sum() for k in keys])
    else:
        v_K = torch.zeros(len(keys), device=dims.device)
    return dict(zip(keys, _dp_sum(dims, _from_last_stage(dims, v_K)).unbind()))


def _seq_values(dims, mbs: list[MicroBatch], outs: list[dict], key: str, n: int) -> torch.Tensor:
    """[n] values, one per packed sequence (in the caller's order), on every stage."""
    out_N = torch.zeros(n, device=dims.device)
    if dims.is_last_stage:
        for mb, o in zip(mbs, outs):
            out_N[mb.seq_N] = o[key].float()
    return _from_last_stage(dims, out_N)


def _token_values(dims, mbs: list[MicroBatch], outs: list[dict], key: str, n: int) -> list[torch.Tensor]:
    """Per-token values of every micro-batch's rows, split back into each sequence's response tokens."""
    if dims.is_last_stage:
        flat = torch.cat([o[key].float() for o in outs])
    else:
        flat = torch.zeros(sum(mb.num_tokens for mb in mbs), device=dims.device)
    flat = _from_last_stage(dims, flat)
    return unpack_tokens(mbs, list(flat.split([mb.num_tokens for mb in mbs])), n)


def dp_mean(dims, metrics: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor]:
    """Average per-rank metrics over DP ranks (every rank holds the same number of prompts and samples)."""
    keys = list(metrics)
    v_K = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float32, device=dims.device) for k in keys])
    return dict(zip(keys, (_dp_sum(dims, v_K) / dims.dp).unbind()))
