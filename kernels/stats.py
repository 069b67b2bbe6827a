"""Softmax partial statistics over a slice of the vocabulary, and how to merge them.

A slice (a vocab tile range, a split of a kernel, or a tensor-parallel shard)
summarises each token row of scaled logits z = logits / temperature as
stats[4, T] fp32:
    m  = max_v z                    (-inf for an empty slice)
    s  = sum_v exp(z - m)
    tg = z[target] if the target lies in the slice else 0
    u  = sum_v exp(z - m) * (z - m) (for the entropy; 0 when not asked)
entropy = log(s) - u / s: both terms are >= 0, so no cancellation against lse.
Slices merge exactly (up to rounding) in a fixed order, so results are
deterministic and the same algorithm serves one GPU and a vocab-parallel group.
"""
import torch
import torch.distributed as dist


def combine(parts_N4T: torch.Tensor) -> torch.Tensor:
    """Merge N slices' stats [N, 4, T] -> [4, T], in index order."""
    if parts_N4T.shape[0] == 1:
        return parts_N4T[0]
    m_NT, s_NT, tg_NT, u_NT = parts_N4T.unbind(1)
    m_T = m_NT.amax(0)
    w_NT = torch.exp(m_NT - m_T)  # empty slices have m = -inf -> weight 0
    # re-centre each slice's u from its own max to the global one; where() keeps -inf * 0 out
    u_NT = torch.where(w_NT > 0, w_NT * (u_NT + (m_NT - m_T) * s_NT), 0.0)
    return torch.stack([m_T, (s_NT * w_NT).sum(0), tg_NT.sum(0), u_NT.sum(0)])


# torch 2.13 renames all_gather_into_tensor (deprecated there) to all_gather_single
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def combine_over_group(stats_4T: torch.Tensor, group) -> torch.Tensor:
    """One all-gather of 4*T floats per rank, then the same fixed-order merge on every rank
    (deterministic, unlike a floating-point all-reduce whose order the backend picks)."""
    world = dist.get_world_size(group)
    out = torch.empty((world * 4, stats_4T.shape[1]), dtype=stats_4T.dtype, device=stats_4T.device)
    _all_gather(out, stats_4T.contiguous(), group=group)
    return combine(out.view(world, 4, -1))


def finalize(stats_4T: torch.Tensor):
    """-> (lse_T, logp_T, entropy_T). logp is clamped to <= 0: rounding must never yield a
    positive log-prob (verl #2656)."""
    m_T, s_T, tg_T, u_T = stats_4T.unbind(0)
    lse_T = m_T + torch.log(s_T)
    logp_T = torch.clamp(tg_T - lse_T, max=0.0)
    entropy_T = torch.log(s_T) - u_T / s_T
    return lse_T, logp_T, entropy_T
