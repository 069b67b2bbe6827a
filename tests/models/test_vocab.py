"""The one vocab-shard rule (gadx/models/vocab.py) shared by the model layer and the TP sampler."""
import pytest

from gadx.models.vocab import padded_vocab_size, vocab_shard


@pytest.mark.parametrize("V,tp", [(10, 1), (10, 2), (10, 3), (10, 4), (7, 8), (128, 4)])
def test_shards_tile_the_vocab(V, tp):
    shards = [vocab_shard(V, r, tp) for r in range(tp)]
    rows = shards[0][2]
    assert all(s[2] == rows for s in shards) and rows * tp == padded_vocab_size(V, tp) >= V
    assert padded_vocab_size(V, tp) - V < tp  # the least padding that divides
    assert shards[0][0] == 0 and shards[-1][1] == V
    for (s0, e0, _), (s1, e1, _) in zip(shards, shards[1:]):
        assert e0 == s1 and s1 <= e1  # contiguous; a trailing rank may hold padding only
    assert all(e - s <= rows for s, e, _ in shards)


def test_model_layer_and_sampler_use_it():
    from gadx.sampler import tp_sampler

    assert tp_sampler.vocab_shard is vocab_shard
    assert vocab_shard(10, 2, 4) == (6, 9, 3) and vocab_shard(10, 3, 4) == (9, 10, 3)
