"""Sequence parallelism for the local (non-TE) spec, and the token padding it needs.

megatron's sequence parallelism splits the [T, B, H] activations outside the TP regions along T
over the TP ranks. The embedding already reduce-scatters into that layout and the TP linears
all-gather / reduce-scatter at their edges; what the local spec lacks is a norm that accepts
it: megatron's torch norm wrapper asserts ``not sequence_parallel``, because a norm's weight
then sees only this rank's tokens and its gradient must be summed over TP. ``SPRMSNorm`` is the
same torch RMSNorm with the weight tagged ``sequence_parallel`` (megatron's finalize_model_grads
all-reduces the gradients of tagged parameters over TP), and ``sp_block_spec`` puts it in every
layer and the final norm.

The loss heads get the full sequence: ``gather_hidden`` all-gathers the last stage's output.
Why gather, not make the heads sequence-aware: the heads already split the vocabulary over TP
(vocab-parallel fused log-prob / GRPO kernels that merge the shards' softmax statistics per
token); with the tokens split too, a token's logits would live on one rank's rows x another
rank's columns. The gather is [T, H] per micro-batch (T=14,336, H=3,584 in bf16: 98 MiB),
small next to one [C, V/TP] logit chunk, and the discriminator's last-token gather then reads
any position. Its backward keeps this rank's slice of the gradient (no reduce-scatter): every
head already gives each TP rank the full gradient of the gathered hidden states (the
vocab-parallel kernels all-reduce d(hidden); the score head is replicated).
"""
from __future__ import annotations

import copy

import torch


class SPRMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm built like megatron's norms (config, hidden_size, eps), usable under SP."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__(normalized_shape=hidden_size, eps=eps)
        # megatron sums the grads of tagged params over TP (each rank saw T/TP of the tokens)
        self.weight.sequence_parallel = bool(config.sequence_parallel)


def sp_block_spec(layer_spec, num_layers: int):
    """A TransformerBlock spec of ``num_layers`` copies of ``layer_spec`` whose norms (per layer
    and the final one) are ``SPRMSNorm``: the local spec's torch norms refuse sequence parallelism."""
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules

    spec = copy.deepcopy(layer_spec)
    for name in ("input_layernorm", "pre_mlp_layernorm"):
        if getattr(spec.submodules, name, None) is not None and not _is_identity(getattr(spec.submodules, name)):
            setattr(spec.submodules, name, SPRMSNorm)
    return ModuleSpec(module=TransformerBlock,
                      submodules=TransformerBlockSubmodules(layer_specs=[spec] * num_layers, layer_norm=SPRMSNorm))


def _is_identity(module) -> bool:
    from megatron.core.transformer.identity_op import IdentityOp

    return module is IdentityOp


def pad_tokens(input_ids_BT, position_ids_BT, doc_ids_BT, multiple: int):
    """Pad [B, T] inputs at the end to a multiple of ``multiple`` tokens. The padding is a
    document of its own (doc id past the row's last) or, without doc ids, a causal tail:
    either way no real token attends to it, so the real tokens' outputs are unchanged.
    Returns (ids, positions, docs, T) with T the original length."""
    B, T = input_ids_BT.shape
    n = -T % multiple
    if n == 0:
        return input_ids_BT, position_ids_BT, doc_ids_BT, T
    dev = input_ids_BT.device
    input_ids_BT = torch.cat([input_ids_BT, input_ids_BT.new_zeros(B, n)], dim=1)
    if doc_ids_BT is not None:
        pad_doc_Bn = (doc_ids_BT.max(dim=1, keepdim=True).values + 1).expand(B, n)
        doc_ids_BT = torch.cat([doc_ids_BT, pad_doc_Bn], dim=1)
    if position_ids_BT is not None:
        if doc_ids_BT is not None:
            pad_pos_Bn = torch.arange(n, device=dev).expand(B, n)
        else:  # a causal tail: continue the positions
            pad_pos_Bn = position_ids_BT[:, -1:] + 1 + torch.arange(n, device=dev)
        position_ids_BT = torch.cat([position_ids_BT, pad_pos_Bn.to(position_ids_BT.dtype)], dim=1)
    return input_ids_BT, position_ids_BT, doc_ids_BT, T


def gather_hidden(out_TBH: torch.Tensor, tp_group) -> torch.Tensor:
    """[T/TP, B, H] sequence-parallel shard -> [T, B, H] on every TP rank; backward: this rank's
    slice of the (already complete) gradient."""
    from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

    return gather_from_sequence_parallel_region(out_TBH, tensor_parallel_output_grad=False, group=tp_group)
