"""How the vocabulary is cut across tensor-parallel ranks: the one rule for the model layer
(megatron's embedding and LM head, gadx.models.gpt) and the TP sampler (gadx.sampler.tp_sampler).

    padded_vocab_size(V, tp)          # ceil(V / tp) * tp rows in all: megatron pads with zero rows
    start, end, rows = vocab_shard(V, tp_rank, tp)    # real ids [start, end) of the rank; rows per rank

Torch-free on purpose: the sampler imports it without megatron-core.
"""
from __future__ import annotations


def padded_vocab_size(vocab_size: int, tp: int) -> int:
    """The vocab padded to a multiple of ``tp`` (the pad rows are zero and never sampled)."""
    return -(-vocab_size // tp) * tp


def vocab_shard(vocab_size: int, tp_rank: int, tp_size: int) -> tuple[int, int, int]:
    """``(start, end, rows)``: the real ids ``[start, end)`` of rank ``tp_rank`` and its padded row
    count ``ceil(V / tp)``; the last ranks' shards end in pad rows (or are all padding)."""
    rows = padded_vocab_size(vocab_size, tp_size) // tp_size
    start = min(tp_rank * rows, vocab_size)
    return start, min(start + rows, vocab_size), rows
