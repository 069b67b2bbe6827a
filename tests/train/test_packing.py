import random

import pytest
import torch

from gadx.train.packing import global_token_count, pack, plan_bins, unpack_tokens
from gadx.train.sequences import encode_prompt, encode_teacher_reply, score_index


def _seqs(n, seed=0):
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 50) for _ in range(rng.randrange(1, 9))] for _ in range(n)]
    responses = [[rng.randrange(3, 50) for _ in range(rng.randrange(1, 7))] for _ in range(n)]
    return prompts, responses


def test_plan_bins_respects_budget_and_covers_all():
    lengths = [7, 3, 9, 1, 4, 4, 10, 2]
    bins = plan_bins(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(8))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 40 tokens, budget 10: first-fit-decreasing is tight here
    with pytest.raises(ValueError, match="more than the micro-batch budget"):
        plan_bins([11], 10)


def test_pack_layout_targets_mask_and_last_index():
    prompts, responses = _seqs(6)
    adv = torch.arange(6, dtype=torch.float32)
    vals = [torch.arange(len(r), dtype=torch.float32) + 100 * i for i, r in enumerate(responses)]
    mbs = pack(prompts, responses, 16, per_token={"v": vals}, per_seq={"adv": adv})
    seen = set()
    total_mask = 0
    for mb in mbs:
        ids = mb.input_ids_1T[0].tolist()
        assert len(ids) <= 16 and mb.position_ids_1T.shape == mb.doc_ids_1T.shape == (1, len(ids))
        assert torch.equal(mb.per_seq["adv"], adv[mb.seq_N])
        for d, i in enumerate(mb.seq_N.tolist()):
            seen.add(i)
            sel = (mb.doc_ids_1T[0] == d).nonzero().flatten()
            p, r = prompts[i], responses[i]
            assert [ids[j] for j in sel] == p + r
            assert mb.position_ids_1T[0, sel].tolist() == list(range(len(p) + len(r)))
            # masked targets are exactly the response tokens, in order
            m = mb.mask_T[sel] > 0
            assert mb.targets_T[sel][m].tolist() == r
            assert mb.per_token["v"][sel][m].tolist() == vals[i].tolist()
            assert mb.last_idx_N[d].item() == sel[0].item() + score_index(len(p), len(r))
        total_mask += int(mb.mask_T.sum())
    assert seen == set(range(6))
    assert total_mask == sum(map(len, responses))
    assert global_token_count(mbs).item() == total_mask
    back = unpack_tokens(mbs, [mb.per_token["v"] for mb in mbs], 6)
    assert all(torch.equal(b, v) for b, v in zip(back, vals))


class _Tok:
    eos_id = 2

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        return [ord(c) for c in text]

    def encode_chat(self, messages, add_generation_prompt=True):
        return [1] + [ord(c) for m in messages for c in m["content"]] + [9]


def test_teacher_reply_gets_eos_and_is_cut_without_it():
    tok = _Tok()
    assert encode_teacher_reply(tok, "ab", 10) == [97, 98, 2]
    assert encode_teacher_reply(tok, "abcd", 3) == [97, 98, 99]  # cut: no EOS, D reads the last kept token


def test_prompt_cut_on_the_right_and_flagged():
    tok = _Tok()
    p = encode_prompt(tok, [{"role": "user", "content": "hello"}], 4)
    assert p.ids == [1, 104, 101, 108] and p.truncated
    q = encode_prompt(tok, [{"role": "user", "content": "hi"}], 10)
    assert q.ids == [1, 104, 105, 9] and not q.truncated


def test_groups_stay_whole():
    prompts, responses = _seqs(12, seed=3)
    groups = [i // 3 for i in range(12)]
    mbs = pack(prompts, responses, 40, groups=groups)
    for mb in mbs:
        gs = {groups[i] for i in mb.seq_N.tolist()}
        assert all(sum(groups[i] == g for i in mb.seq_N.tolist()) == 3 for g in gs)
    assert sorted(i for mb in mbs for i in mb.seq_N.tolist()) == list(range(12))


def test_pad_to_gives_fixed_shapes_that_change_nothing_else():
    from gadx.train.packing import pack, unpack_tokens

    prompts, resps = [[1, 2], [3], [4, 5, 6]], [[7, 8], [9, 10, 11], [12]]
    logp = [torch.tensor([0.5, 0.25]), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0])]
    plain = pack(prompts, resps, 8, per_token={"x": logp}, groups=[0, 1, 1])
    padded = pack(prompts, resps, 8, per_token={"x": logp}, groups=[0, 1, 1], pad_to=8)
    assert [mb.num_tokens for mb in padded] == [8] * len(plain)
    for a, b in zip(plain, padded):
        n = a.num_tokens
        assert torch.equal(a.input_ids_1T, b.input_ids_1T[:, :n]) and torch.equal(a.mask_T, b.mask_T[:n])
        assert b.mask_T[n:].sum() == 0 and (b.doc_ids_1T[0, n:] == b.doc_ids_1T[0, :n].max() + 1).all()
        assert torch.equal(a.last_idx_N, b.last_idx_N) and a.num_groups == b.num_groups
        assert set(b.per_seq["group"].tolist()) == set(range(b.num_groups))
    got = unpack_tokens(padded, [mb.per_token["x"] for mb in padded], 3)
    assert all(torch.equal(g, w) for g, w in zip(got, logp))
