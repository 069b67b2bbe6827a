"""SDPAttention (the non-TE core attention) against a plain softmax reference."""
import math

import pytest
import torch

from gadx.models.spec import SDPAttention


def reference(q, k, v, blocked):
    # q [Sq,B,Hq,D], k/v [Sk,B,Hkv,D]; blocked [B or 1,1,Sq,Sk] True = masked
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
    s = torch.einsum("qbhd,kbhd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    p = s.masked_fill(blocked, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,kbhd->qbhd", p, v.double())
    return out.reshape(q.shape[0], q.shape[1], -1).float()


@pytest.fixture
def attn():
    from gadx.models.gpt import transformer_config
    from gadx.models.config import ModelConfig
    from gadx.parallel import init_parallel

    init_parallel()
    cfg = ModelConfig(family="llama", vocab_size=8, hidden_size=32, intermediate_size=8, num_layers=1,
                      num_heads=4, num_kv_heads=2, head_dim=8)
    return SDPAttention(transformer_config(cfg, tp=1, pp=1, dtype=torch.float32), 1, None, "self").eval()


@pytest.mark.parametrize("sq,sk", [(7, 7), (1, 9), (3, 9)])
def test_causal_default_aligns_to_last_key(attn, sq, sk):
    q, k, v = torch.randn(sq, 2, 4, 8), torch.randn(sk, 2, 2, 8), torch.randn(sk, 2, 2, 8)
    blocked = ~torch.ones(sq, sk, dtype=torch.bool).tril(sk - sq)
    torch.testing.assert_close(attn(q, k, v, None), reference(q, k, v, blocked[None, None]), rtol=1e-5, atol=1e-5)


def test_explicit_mask(attn):
    q, k, v = torch.randn(6, 2, 4, 8), torch.randn(6, 2, 2, 8), torch.randn(6, 2, 2, 8)
    blocked = torch.rand(2, 1, 6, 6) > 0.5
    blocked[..., torch.arange(6), torch.arange(6)] = False  # every query keeps one key
    torch.testing.assert_close(attn(q, k, v, blocked), reference(q, k, v, blocked), rtol=1e-5, atol=1e-5)
