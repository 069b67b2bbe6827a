"""GPU checks (skipped without CUDA): ours vs eager bf16, both against float64.

Criterion from kernels.md: |ours - fp64| <= 1.5 * |eager_bf16 - fp64| + atol.
"""
import pytest
import torch

from gadx.kernels import grpo_loss, token_logprobs
from gadx.kernels.reference import reference_grpo_loss, reference_token_logprobs

pytestmark = pytest.mark.gpu


def _inputs(T=1024, H=1024, V=32771):
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(T, H, device="cuda", generator=g).bfloat16()
    w = (torch.randn(V, H, device="cuda", generator=g) / H ** 0.5 * 3).bfloat16()
    t = torch.randint(0, V, (T,), device="cuda", generator=g)
    return h, w, t


def _eager_logp(h, w, t):
    return torch.log_softmax((h @ w.T).float(), -1).gather(1, t[:, None])[:, 0]


def test_logprobs_no_worse_than_eager_bf16():
    h, w, t = _inputs()
    ref = reference_token_logprobs(h.cpu(), w.cpu(), t.cpu()).cuda()
    ours = token_logprobs(h, w, t)
    eager = _eager_logp(h, w, t)
    assert (ours <= 0).all()
    assert (ours.double() - ref).abs().max() <= 1.5 * (eager.double() - ref).abs().max() + 1e-5


def test_grpo_grads_no_worse_than_eager_bf16():
    h, w, t = _inputs(T=512, V=8191)
    T = h.shape[0]
    logp = reference_token_logprobs(h.cpu(), w.cpu(), t.cpu()).float()
    adv, old = torch.randn(T), logp + 0.2 * torch.randn(T)
    ref, mask = logp + 0.1 * torch.randn(T), torch.rand(T) > 0.1
    h64, w64 = h.cpu().double().requires_grad_(), w.cpu().double().requires_grad_()
    reference_grpo_loss(h64, w64, t.cpu(), adv, old, ref, mask, kl_coef=0.01)[0].backward()
    adv, old, ref, mask = adv.cuda(), old.cuda(), ref.cuda(), mask.cuda()
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    grpo_loss(hh, ww, t, adv, old, ref, mask, kl_coef=0.01)[0].backward()
    he, we = h.clone().requires_grad_(), w.clone().requires_grad_()
    lp = torch.log_softmax((he @ we.T).float(), -1).gather(1, t[:, None])[:, 0]
    ratio = torch.exp(lp - old)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    d = ref - lp
    kl = (torch.exp(d) - d - 1).clamp(-10, 10)
    ((pg + 0.01 * kl) * mask).sum().div(mask.sum()).backward()
    for ours, eager, want in ((hh.grad, he.grad, h64.grad), (ww.grad, we.grad, w64.grad)):
        want = want.cuda()
        assert (ours.double() - want).abs().max() <= 1.5 * (eager.double() - want).abs().max() + 1e-6
