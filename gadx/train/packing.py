"""Pack variable-length (prompt, response) sequences into micro-batches by a token budget.

    mbs = pack(prompts, responses, budget=2048,
               per_token={"old_logp": old_list, "adv": adv_list},   # one value per response token
               per_seq={"seq": torch.arange(S)})
    norm = global_token_count(mbs, dp_group)   # device tensor; all-reduced over DP, no .item()

Each micro-batch is one row ``[1, T]`` of concatenated sequences (no padding
between them): ``doc_ids`` tell attention where sequences start, positions
restart per sequence, ``targets[t]`` is the next token of the same sequence and
``mask[t]`` is 1 exactly where that target is a response token (so the loss
covers responses only). ``last_idx`` is where D reads each sequence's score.
Bins are filled first-fit in decreasing length, so the split of a batch into
micro-batches depends only on lengths and the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    num_groups: int = 0  # with ``groups``: per_seq["group"] holds local ids 0..num_groups-1
    per_token: dict[str, torch.Tensor] = field(default_factory=dict)  # [T], zero off the mask
    per_seq: dict[str, torch.Tensor] = field(default_factory=dict)  # [N]

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
    out = []
    for idx in plan:
        ids, pos, doc, tgt, msk, last = [], [], [], [], [], []
        tok_vals: dict[str, list[torch.Tensor]] = {k: [] for k in per_token}
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
            for k, vals in per_token.items():
                v = vals[i].float().cpu()
                assert v.shape == (len(r),), f"per_token[{k!r}][{i}] has shape {tuple(v.shape)}, response has {len(r)}"
                tok_vals[k].append(torch.cat([torch.zeros(len(p) - 1), v, torch.zeros(1)]))
        if pad_to:
            assert len(ids) <= pad_to
            n_pad = pad_to - len(ids)
            ids += [0] * n_pad
            pos += range(n_pad)
            doc += [len(idx)] * n_pad
            tgt += [0] * n_pad
            msk += [0.0] * n_pad
            for k in tok_vals:
                tok_vals[k].append(torch.zeros(n_pad))
        seq_N = torch.tensor(idx, dtype=torch.long)
        seq_ps = dict(per_seq)
        n_groups = 0
        if groups is not None:
            local = {g: j for j, g in enumerate(dict.fromkeys(groups[i] for i in idx))}
            seq_ps["group"] = torch.tensor([local[groups[i]] for i in idx])
            n_groups = len(local)
        out.append(
            MicroBatch(
                input_ids_1T=torch.tensor([ids], dtype=torch.long, device=device),
                position_ids_1T=torch.tensor([pos], dtype=torch.long, device=device),
                doc_ids_1T=torch.tensor([doc], dtype=torch.long, device=device),
                targets_T=torch.tensor(tgt, dtype=torch.long, device=device),
                mask_T=torch.tensor(msk, dtype=torch.float32, device=device),
                last_idx_N=torch.tensor(last, dtype=torch.long, device=device),
                seq_N=seq_N.to(device),
                seqs=list(idx),
                num_groups=n_groups,
                per_token={k: torch.cat(v).to(device) for k, v in tok_vals.items()},
                per_seq={k: (v if k == "group" and groups is not None else v[seq_N]).to(device) for k, v in seq_ps.items()},
            )
        )
    return out


def unpack_tokens(mbs: list[MicroBatch], values_T: list[torch.Tensor], num_seqs: int) -> list[torch.Tensor]:
    """Inverse of ``pack`` for per-token values: each sequence's values at its response-target positions."""
    out: list[torch.Tensor | None] = [None] * num_seqs
    for mb, v in zip(mbs, values_T):
        doc = mb.doc_ids_1T[0]
        for d, i in enumerate(mb.seqs):
            sel = (doc == d) & (mb.mask_T > 0)
            out[i] = v[sel]
    assert all(o is not None for o in out)
    return out  # type: ignore[return-value]


def global_token_count(mbs: list[MicroBatch], group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Valid loss tokens over all micro-batches and data-parallel ranks, as a device tensor."""
    n = torch.stack([mb.mask_T.sum() for mb in mbs]).sum() if mbs else torch.zeros(())
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(n, group=group)
    return n
