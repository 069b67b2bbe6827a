"""Packed sequences (doc_ids) and the discriminator head."""
import pytest
import torch

from tiny_models import save_parity_hf


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2")
    save_parity_hf("qwen2-gqa-untied-v517-1e6", folder)
    return folder


def test_packed_equals_separate(ckpt):
    from gadx.models import from_pretrained

    model = from_pretrained(ckpt)
    lens = [5, 9, 3]
    docs = [torch.randint(0, 517, (n,)) for n in lens]
    ids_1T = torch.cat(docs)[None]
    doc_ids_1T = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])[None]
    with torch.no_grad():
        packed = model.hidden(ids_1T, doc_ids_BT=doc_ids_1T)[0]
        separate = torch.cat([model.hidden(d[None])[0] for d in docs])
        unmasked = model.hidden(ids_1T)[0]
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-5)
    assert (unmasked[5:] - separate[5:]).abs().max() > 1e-2  # the mask is what makes them equal


def test_score_is_head_at_last_valid_token(ckpt):
    from gadx.models import from_pretrained

    d = from_pretrained(ckpt, head="score", seed=3)
    assert d.score_head.weight.dtype == torch.float32 and d.score_head.bias.shape == (1,)
    ids_BT = torch.randint(0, 517, (3, 10))
    lengths_B = torch.tensor([10, 4, 7])
    with torch.no_grad():
        scores_B = d.score(ids_BT, lengths_B)
        for b, n in enumerate(lengths_B.tolist()):
            alone = d.score(ids_BT[b : b + 1, :n], torch.tensor([n]))  # padding after n is ignored
            torch.testing.assert_close(scores_B[b : b + 1], alone, rtol=1e-5, atol=1e-6)
            h = d.hidden(ids_BT[b : b + 1])[0, n - 1]
            torch.testing.assert_close(scores_B[b], h @ d.score_head.weight[0] + d.score_head.bias[0])
        assert scores_B[1] != d.score(ids_BT[1:2], torch.tensor([5]))[0]
    with pytest.raises(ValueError, match="lengths"):
        d.score(ids_BT, torch.tensor([11, 1, 1]))


def test_score_packed_matches_score(ckpt):
    from gadx.models import from_pretrained

    d = from_pretrained(ckpt, head="score")
    seqs = [torch.randint(0, 517, (n,)) for n in (6, 3, 8)]
    ids_1T = torch.cat(seqs)[None]
    doc_ids_1T = torch.cat([torch.full((len(s),), i) for i, s in enumerate(seqs)])[None]
    last_N = torch.tensor([5, 8, 16])
    with torch.no_grad():
        packed = d.score_packed(ids_1T, doc_ids_1T, last_N)
        separate = torch.stack([d.score(s[None], torch.tensor([len(s)]))[0] for s in seqs])
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-6)


def test_score_head_seeded_and_saved(ckpt, tmp_path):
    from gadx.models import from_pretrained, save_pretrained
    from safetensors.torch import load_file

    a, b, c = (from_pretrained(ckpt, head="score", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.score_head.weight, b.score_head.weight)
    assert not torch.equal(a.score_head.weight, c.score_head.weight)
    with torch.no_grad():
        a.score_head.bias.fill_(0.25)
    save_pretrained(a, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    assert sd["score.weight"].shape == (1, 64) and sd["score.bias"].item() == 0.25
    assert "lm_head.weight" not in sd
    back = from_pretrained(tmp_path, head="score", seed=9)  # a D checkpoint keeps its own head
    ids_BT = torch.randint(0, 517, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(back.score(ids_BT, torch.tensor([6, 2])), a.score(ids_BT, torch.tensor([6, 2])))


def test_score_trains(ckpt):
    from gadx.models import from_pretrained

    d = from_pretrained(ckpt, head="score")
    ids_BT = torch.randint(0, 517, (4, 8))
    loss = -torch.nn.functional.logsigmoid(d.score(ids_BT[:2], torch.tensor([8, 8])) - d.score(ids_BT[2:], torch.tensor([8, 8]))).mean()
    loss.backward()
    assert d.score_head.weight.grad.abs().sum() > 0
    assert d.gpt.decoder.layers[0].self_attention.linear_qkv.weight.grad.abs().sum() > 0
