"""TPKVCacheSampler: rollouts on the tensor-parallel student, without gathering its weights or [B, V] logits.

    from gadx.sampler import TPKVCacheSampler, local_hf_state_dict
    sampler = TPKVCacheSampler(model.config, tp_group=dims.tp_group, max_batch=64, max_seq_len=512)
    sampler.load_weights(local_hf_state_dict(model))   # this rank's megatron shard in HF names: views, no all-gather
    out = sampler.generate(prompts, max_new_tokens=64, temperature=0.8, eos_ids=cfg.eos_ids, seed=step)

Every rank of ``tp_group`` calls ``generate`` with the same arguments and gets the same
:class:`~gadx.sampler.Rollout`. The shard is megatron's TP split (``shard_hf_state`` cuts one
from a full HF state dict): q/k/v (and their biases) and gate/up by output rows, i.e. by
heads / intermediate rows; o_proj and down_proj by input columns; the embedding and an untied
LM head by vocab rows, padded to ``ceil(V / tp)`` rows per rank with zero pad rows at the end
(``GadxModel.vocab_range``); norms replicated. The KV cache holds the local KV heads only.

Per decoded token: one all-reduce of [B, H] for the vocab-parallel embedding lookup (each rank
contributes its rows, zeros elsewhere: exact), one per o_proj and one per down_proj partial sum
(SUM), and one all-gather of 5 float64 per row for sampling. Sampling is exact and two-level
(``vocab_parallel_sample``): each rank draws a candidate from its own shard by inverse CDF, and
all ranks pick the same shard with probability proportional to its mass, from one uniform drawn
by rank 0; the global logsumexp (from every shard's max and sum exp) gives the log-prob
``log_softmax(logits / T)`` of the token. This replaces Gumbel-max over the shards, which needs
a random number and two logs per vocab entry: on this CPU, [32, 4096] shard logits took 10.3 ms
with Gumbel noise vs 2.0 ms by inverse CDF (1.0 ms for the max + sum exp both need).
Greedy (``temperature=0``) is the argmax across shards (ties to the lowest id), with the
untempered log-prob, as ``KVCacheSampler`` does. top-k / top-p need the sorted global
distribution, so at TP > 1 they raise ValueError; at TP = 1 sampling is ``KVCacheSampler``'s own (same numbers).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gadx.models.config import ModelConfig
from gadx.models.vocab import vocab_shard
from gadx.sampler.decoder import Decoder, bind_weights, expected_shapes
from gadx.sampler.engine import Rollout
from gadx.sampler.kv_sampler import KVCacheSampler
from gadx.sampler.sampling import row_uniforms, sample

_COLUMN_PARALLEL = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                    "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                    "mlp.gate_proj.weight", "mlp.up_proj.weight")
_ROW_PARALLEL = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
_VOCAB_PARALLEL = ("model.embed_tokens.weight", "lm_head.weight")
# torch 2.13 renames all_gather_into_tensor (deprecated there) to all_gather_single; the GPU image has 2.11
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor




def local_config(cfg: ModelConfig, tp_size: int) -> ModelConfig:
    """The config whose full-model shapes are one TP shard's shapes (vocab = padded rows per rank)."""
    cfg.check_parallel(tp_size)
    if cfg.intermediate_size % tp_size:
        raise ValueError(f"tensor parallel size {tp_size} does not divide intermediate_size={cfg.intermediate_size}")
    return cfg.replace(num_heads=cfg.num_heads // tp_size, num_kv_heads=cfg.num_kv_heads // tp_size,
                       intermediate_size=cfg.intermediate_size // tp_size,
                       vocab_size=vocab_shard(cfg.vocab_size, 0, tp_size)[2])


def shard_hf_state(full_hf_sd: Mapping[str, torch.Tensor], cfg: ModelConfig, tp_rank: int,
                   tp_size: int) -> dict[str, torch.Tensor]:
    """Cut rank ``tp_rank``'s TP shard (HF names, megatron's split) out of a full HF state dict.

    Views of ``full_hf_sd`` except a vocab shard that needs pad rows. Names the decoder does not
    read (a tied ``lm_head.weight``, a score head) are left out."""
    if not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank must be in [0, {tp_size}), got {tp_rank}")
    local_config(cfg, tp_size)  # divisibility checks
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in full_hf_sd]
    if missing:
        raise ValueError(f"state dict is missing {len(missing)} tensors the model needs, e.g. {missing[:3]}")
    start, end, rows = vocab_shard(cfg.vocab_size, tp_rank, tp_size)
    out = {}
    for name, shape in shapes.items():
        t = full_hf_sd[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} does not match the config's {shape}")
        if name.endswith(_COLUMN_PARALLEL):
            out[name] = t.chunk(tp_size, 0)[tp_rank]
        elif name.endswith(_ROW_PARALLEL):
            out[name] = t.chunk(tp_size, 1)[tp_rank]
        elif name in _VOCAB_PARALLEL:
            if end - start == rows:
                out[name] = t[start:end]
            else:
                out[name] = t.new_zeros(rows, t.shape[1])
                out[name][: end - start] = t[start:end]
        else:
            out[name] = t
    return out


def local_hf_state_dict(model) -> dict[str, torch.Tensor]:
    """This TP rank's weights of a ``GadxModel`` (or a megatron-DDP wrapper of one) in HF names,
    as ``shard_hf_state`` lays them out, without any communication.

    Views of the parameters, except q/k/v, which a reshape out of megatron's fused QKV copies
    when a rank holds several KV heads (as ``gadx.models.hf_state_dict`` does at TP=1)."""
    from gadx.models.hf_io import _entries  # megatron parameter <-> HF names, the one mapping gadx has

    while not hasattr(model, "dims"):
        model = model.module
    cfg, dims = model.config, model.dims
    if dims.pp != 1:
        raise ValueError(f"TPKVCacheSampler needs every layer on each rank; got pipeline parallel size {dims.pp}")
    if model.head != "lm":
        raise ValueError(f"a rollout sampler needs an LM head, got head={model.head!r}")
    nkv, qpg, hd = cfg.num_kv_heads // dims.tp, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
    out: dict[str, torch.Tensor] = {}
    for e in _entries(model):
        p = e.param.detach()
        if len(e.names) == 3:  # fused QKV: rows grouped per local KV head as [its q heads, k, v]
            tail = tuple(p.shape[1:])
            q, k, v = p.view(nkv, (qpg + 2) * hd, *tail).split([qpg * hd, hd, hd], dim=1)
            out.update(zip(e.names, (x.reshape(-1, *tail) for x in (q, k, v))))
        elif len(e.names) == 2:  # fused fc1: [gate rows; up rows] of this rank
            out.update(zip(e.names, p.chunk(2, 0)))
        else:
            out[e.names[0]] = p
    return out


class _TPDecoder(Decoder):
    """``Decoder`` over one TP shard: local heads / intermediate rows / vocab rows, partial sums
    all-reduced. Returns this rank's logits ``[B, V_local]`` (pad columns included)."""

    def __init__(self, cfg: ModelConfig, *, tp_group, tp_rank: int, tp_size: int, max_batch: int,
                 max_seq_len: int, device: torch.device, dtype: torch.dtype):
        super().__init__(local_config(cfg, tp_size), max_batch=max_batch, max_seq_len=max_seq_len, device=device,
                         dtype=dtype)
        self.group, self.tp_size = tp_group, tp_size
        self.vocab_start, self.vocab_end, _ = vocab_shard(cfg.vocab_size, tp_rank, tp_size)

    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weights.embed)
        local = ids - self.vocab_start
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        x = F.embedding(local.masked_fill(outside, 0), self.weights.embed)
        return self._sum(x.masked_fill_(outside[..., None], 0.0))


def vocab_parallel_sample(logits_BV: torch.Tensor, *, temperature: float, vocab_start: int, vocab_end: int,
                          group, tp_size: int, generator: torch.Generator | None,
                          rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from vocab-sharded logits: ``(tokens_B, logp_B)``, the same on every rank.

    ``logits_BV`` is this rank's shard (ids ``vocab_start + column``; columns from
    ``vocab_end - vocab_start`` on are padding). Each rank draws a candidate from its shard's
    conditional distribution ``exp(z_i) / S_r`` (inverse CDF, one uniform), then one all-gather
    of (id, z, max, sum exp, uniform) per row; every rank picks shard r with probability
    ``S_r / sum S`` using rank 0's second uniform, independent of the candidates, so
    P(i) = (S_r / S) (exp(z_i) / S_r) = softmax(z)_i exactly. ``temperature == 0``: the argmax
    (ties to the lowest id, as ``torch.argmax``), log-prob of the untempered distribution."""
    z_BV = logits_BV.float() / (temperature if temperature != 0 else 1.0)  # a new tensor: masked in place
    B, V_local = z_BV.shape
    n_real = vocab_end - vocab_start
    z_BV[:, n_real:] = float("-inf")  # pad rows are zero: their logit 0 must not take mass
    max_B = z_BV.max(-1).values
    e_BV = (z_BV - torch.where(max_B.isfinite(), max_B, 0.0)[:, None]).exp_()  # a rank may hold no real id
    if temperature == 0:
        idx_B, sumexp_B = z_BV.argmax(-1), e_BV.sum(-1)
        u_B = torch.zeros(B, device=z_BV.device)
    else:
        cdf_BV = e_BV.cumsum_(-1)
        sumexp_B1 = cdf_BV[:, -1:]
        u_B2 = row_uniforms(B, 2, generator=generator, device=z_BV.device, rows=rows)
        # below the total, so the first cdf entry above it is a real id (cdf is flat over pads)
        target_B1 = torch.minimum(u_B2[:, :1] * sumexp_B1, torch.nextafter(sumexp_B1, torch.zeros_like(sumexp_B1)))
        idx_B = torch.searchsorted(cdf_BV, target_B1, right=True)[:, 0].clamp_max_(V_local - 1)
        sumexp_B, u_B = sumexp_B1[:, 0], u_B2[:, 1]
    z_tok_B = z_BV.gather(-1, idx_B[:, None])[:, 0]
    stats_B5 = torch.stack([x.double() for x in (idx_B + vocab_start, z_tok_B, max_B, sumexp_B, u_B)], -1)
    all_RB5 = stats_B5.new_empty(tp_size * B, 5)
    _all_gather(all_RB5, stats_B5, group=group)
    all_RB5 = all_RB5.view(tp_size, B, 5)
    max_RB, M_B = all_RB5[..., 2], all_RB5[..., 2].max(0).values
    mass_RB = all_RB5[..., 3] * (max_RB - M_B).exp()  # each shard's sum exp(z) / exp(M)
    total_B = mass_RB.sum(0)
    lse_B = M_B + total_B.log()
    if temperature == 0:
        win_B = all_RB5[..., 1].argmax(0)  # first maximal rank = lowest id on ties
    else:
        target_B = torch.minimum(all_RB5[0, :, 4] * total_B, torch.nextafter(total_B, torch.zeros_like(total_B)))
        win_B = (mass_RB.cumsum(0) <= target_B).sum(0).clamp_max_(tp_size - 1)  # first shard whose cumsum > target
    pick_B5 = all_RB5.gather(0, win_B[None, :, None].expand(1, B, 5))[0]
    return pick_B5[:, 0].long(), (pick_B5[:, 1] - lse_B).float()


class TPKVCacheSampler(KVCacheSampler):
    """The :class:`~gadx.sampler.RolloutEngine` for a TP-sharded student (see the module docstring).

    ``tp_group=None`` means one rank holding everything (no communication)."""

    def __init__(self, cfg: ModelConfig, *, tp_group, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, max_batch: int = 64, max_seq_len: int | None = None,
                 check_every: int = 8):
        self.tp_group = tp_group
        self.tp_size = 1 if tp_group is None else dist.get_world_size(tp_group)
        self.tp_rank = 0 if tp_group is None else dist.get_rank(tp_group)
        super().__init__(cfg, device=device, dtype=dtype, max_batch=max_batch, max_seq_len=max_seq_len,
                         check_every=check_every)

    def _make_decoder(self, max_batch: int, max_seq_len: int) -> Decoder:
        return _TPDecoder(self.cfg, tp_group=self.tp_group, tp_rank=self.tp_rank, tp_size=self.tp_size,
                          max_batch=max_batch, max_seq_len=max_seq_len, device=self.device, dtype=self.dtype)

    def load_weights(self, hf_state_dict: Mapping[str, torch.Tensor]) -> None:
        """Point the decoder at THIS rank's shard (``local_hf_state_dict(model)`` or ``shard_hf_state``);
        tensors kept by reference when dtype/device fit."""
        self.decoder.weights = bind_weights(self.decoder.cfg, hf_state_dict, device=self.device, dtype=self.dtype)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes this rank holds for the weights it reads and for its KV cache."""
        W = self.decoder.weights
        seen = {}
        if W is not None:
            tensors = [W.embed, W.norm, W.lm_head] + [t for w in W.layers for t in vars(w).values() if t is not None]
            seen = {t.data_ptr(): t.numel() * t.element_size() for t in tensors}
        cache = self.decoder.cache  # None after release()
        return {"weights": sum(seen.values()), "kv_cache": 0 if cache is None else cache.numel() * cache.element_size()}

    def _select(self, logits_BV, temperature, top_k, top_p, gen, rows=None):
        if self.tp_size == 1:
            return sample(logits_BV[:, : self.cfg.vocab_size], temperature=temperature, top_k=top_k, top_p=top_p,
                          generator=gen, rows=rows)
        return vocab_parallel_sample(logits_BV, temperature=temperature, vocab_start=self.decoder.vocab_start,
                                     vocab_end=self.decoder.vocab_end, group=self.tp_group, tp_size=self.tp_size,
                                     generator=gen, rows=rows)

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, eos_ids: Sequence[int] = (), seed: int | None = None,
                 rows: tuple[int, int] | None = None) -> Rollout:
        """As ``KVCacheSampler.generate``; collective over ``tp_group`` (same arguments on every rank).
        Tokens come from one all-gather, so every rank stops at the same step."""
        if self.tp_size > 1 and (top_k > 0 or top_p < 1.0):
            raise ValueError(f"top_k={top_k} / top_p={top_p} need the full vocabulary distribution; "
                             f"TPKVCacheSampler at TP={self.tp_size} supports only top_k=0 and top_p=1.0")
        return super().generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k, eos_ids=eos_ids, seed=seed, rows=rows)
