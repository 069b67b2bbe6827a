"""Pack variable-length (prompt, response) sequences into micro-batches by a token budget.

    mbs = pack(prompts, responses, budget=2048,
               per_token={"old_logp": old_list, "adv": adv_list},   # one value per response token
               per_seq={"seq": torch.arange(S)})
    norm = global_token_count(mbs, dp_group)   # device tensor; all-reduced over DP, no .item()

Every tensor of a micro-batch is built on ``device`` (the model's): the token lists are
host data, moved with one copy per tensor, and per-token values that already live on the
device (old / reference log-probs) are scattered there without a round trip through the
host. Nothing here reads a device value back (no host sync inside a step).

Each micro-batch is one row ``[1, T]`` of concatenated sequences (no padding
between them): ``doc_ids`` tell attention where sequences start, positions
restart per sequence (``packed``: megatron THD params for attention, no [T, T] mask), ``targets[t]`` is the next token of the same sequence and
``mask[t]`` is 1 exactly where that target is a response token (so the loss
covers responses only). ``last_idx`` is where D reads each sequence's score.
Bins are filled first-fit in decreasing length, so the split of a batch into
micro-batches depends only on lengths and the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class MicroBatch:
    input_ids_1T: torch.Tensor
    position_ids_1T: torch.Tensor
    doc_ids_1T: torch.Tensor
    targets_T: torch.Tensor
    mask_T: torch.Tensor  # float32, 1 where the target is a response token
    last_idx_N: torch.Tensor  # D's read position per packed sequence
    seq_N: torch.Tensor  # index of each packed sequence in the caller's list
    seqs: list[int] = field(default_factory=list)  # the same on the host
    spans: list[tuple[int, int]] = field(default_factory=list)  # per sequence: (first response target, length), host
    num_groups: int = 0  # with ``groups``: per_seq["group"] holds local ids 0..num_groups-1
    per_token: dict[str, torch.Tensor] = field(default_factory=dict)  # [T], zero off the mask
    per_seq: dict[str, torch.Tensor] = field(default_factory=dict)  # [N]
    index: dict[str, torch.Tensor] = field(default_factory=dict)  # device index tensors a loss needs, built on the host
    # attention's view of the row: megatron THD params (cu_seqlens over the documents, the padding
    # included), built from host lengths; the model forward takes it instead of a [T, T] mask
    packed: Any = None  # gadx.models.varlen.VarlenParams

    @property
    def num_tokens(self) -> int:
        return self.input_ids_1T.shape[1]


def plan_bins(lengths: list[int], budget: int, what: str = "sequence") -> list[list[int]]:
    """First-fit-decreasing bin packing of item indices; each bin's total <= budget."""
    for i, n in enumerate(lengths):
        if n > budget:
            raise ValueError(f"{what} {i} has {n} tokens, more than the micro-batch budget {budget}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, r in enumerate(room):
            if lengths[i] <= r:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return [sorted(b) for b in bins]


def pack(
    prompts: list[list[int]],
    responses: list[list[int]],
    budget: int,
    *,
    per_token: dict[str, list[torch.Tensor]] | None = None,
    per_seq: dict[str, torch.Tensor] | None = None,
    groups: list[int] | None = None,
    pad_to: int = 0,
    device: torch.device | str = "cpu",
) -> list[MicroBatch]:
    """Pack sequences into micro-batches; with ``groups`` (a group id per sequence, e.g. a prompt's
    teacher reply and its N samples) each group lands whole in one micro-batch, and
    ``per_seq["group"]`` numbers the micro-batch's groups 0..num_groups-1. ``pad_to``: pad every
    row to that many tokens (a document of its own, masked out), the fixed [1, T] shape
    megatron's pipeline schedule sends between stages."""
    assert len(prompts) == len(responses)
    per_token = per_token or {}
    per_seq = per_seq or {}
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    if groups is None:
        plan = plan_bins(lengths, budget)
    else:
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        keys = list(members)
        gbins = plan_bins([sum(lengths[i] for i in members[k]) for k in keys], budget, "group")
        plan = [sorted(i for b in gb for i in members[keys[b]]) for gb in gbins]
    from gadx.models.varlen import varlen_params  # megatron: imported when packing, not with the module

    device = torch.device(device)
    out = []
    for idx in plan:
        ids, pos, doc, tgt, msk, last, spans = [], [], [], [], [], [], []
        for d, i in enumerate(idx):
            p, r = prompts[i], responses[i]
            assert len(p) >= 1 and len(r) >= 1, "prompt and response need at least one token each"
            seq = p + r
            n = len(seq)
            start = len(ids)
            ids += seq
            pos += range(n)
            doc += [d] * n
            # target of position t is seq[t+1]; the last position has none (masked, target 0)
            tgt += seq[1:] + [0]
            resp_mask = [0.0] * (len(p) - 1) + [1.0] * len(r) + [0.0]
            msk += resp_mask
            last.append(start + n - 1)
            spans.append((start + len(p) - 1, len(r)))
        doc_lens = [len(prompts[i]) + len(responses[i]) for i in idx]
        if pad_to:
            assert len(ids) <= pad_to
            n_pad = pad_to - len(ids)
            if n_pad:
                doc_lens.append(n_pad)
            ids += [0] * n_pad
            pos += range(n_pad)
            doc += [len(idx)] * n_pad
            tgt += [0] * n_pad
            msk += [0.0] * n_pad
        # per-token values: one scatter of the sequences' values into their response-target slots
        resp_pos = [s + j for s, L in spans for j in range(L)]
        tok_vals: dict[str, torch.Tensor] = {}
        if per_token:
            resp_pos_R = _on(resp_pos, torch.long, device)
            for k, vals in per_token.items():
                for i, (_, L) in zip(idx, spans):
                    v = vals[i]
                    assert tuple(v.shape) == (L,), f"per_token[{k!r}][{i}] has shape {tuple(v.shape)}, response has {L}"
                vals_R = torch.cat([vals[i].to(device=device, dtype=torch.float32) for i in idx])
                tok_vals[k] = torch.zeros(len(ids), dtype=torch.float32, device=device).index_copy_(0, resp_pos_R, vals_R)
        seq_ps: dict[str, torch.Tensor] = {}
        for k, v in per_seq.items():
            seq_ps[k] = v[torch.tensor(idx, dtype=torch.long, device=v.device)].to(device)
        n_groups = 0
        if groups is not None:
            local = {g: j for j, g in enumerate(dict.fromkeys(groups[i] for i in idx))}
            seq_ps["group"] = _on([local[groups[i]] for i in idx], torch.long, device)
            n_groups = len(local)
        out.append(
            MicroBatch(
                input_ids_1T=_on([ids], torch.long, device),
                position_ids_1T=_on([pos], torch.long, device),
                doc_ids_1T=_on([doc], torch.long, device),
                targets_T=_on(tgt, torch.long, device),
                mask_T=_on(msk, torch.float32, device),
                last_idx_N=_on(last, torch.long, device),
                seq_N=_on(idx, torch.long, device),
                seqs=list(idx),
                spans=spans,
                num_groups=n_groups,
                per_token=tok_vals,
                per_seq=seq_ps,
                packed=varlen_params(doc_lens, device),
            )
        )
    return out


def _on(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a tensor on ``device`` (built on the host, one copy over)."""
    t = torch.tensor(data, dtype=dtype)
    return t if device.type == "cpu" else t.to(device, non_blocking=True)


def unpack_tokens(mbs: list[MicroBatch], values_T: list[torch.Tensor], num_seqs: int) -> list[torch.Tensor]:
    """Inverse of ``pack`` for per-token values: each sequence's values at its response-target positions
    (views, cut at offsets known on the host: no boolean indexing, no host sync)."""
    out: list[torch.Tensor | None] = [None] * num_seqs
    for mb, v in zip(mbs, values_T):
        for i, (start, n) in zip(mb.seqs, mb.spans):
            out[i] = v[start : start + n]
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def global_token_count(mbs: list[MicroBatch], group: dist.ProcessGroup | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Valid loss tokens over all micro-batches and data-parallel ranks, as a tensor on the
    micro-batches' device (``device`` when there are none), all-reduced there (NCCL needs it on the GPU)."""
    if mbs:
        n = torch.stack([mb.mask_T.sum() for mb in mbs]).sum()
    else:
        n = torch.zeros((), device=device or "cpu")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(n, group=group)
    return n
