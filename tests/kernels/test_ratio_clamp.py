"""Log-ratios are clamped to +-20 before exp (as verl does), in every backend and the reference.

Without the clamp, a token whose old (or reference) log-prob is far below the current one
overflows exp (fp32 past ~88, float64 past ~709) and, with a zero advantage (a group whose
samples all got the same reward), -A * ratio = -0 * inf = nan: the loss and every gradient go nan.
"""
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kernel_cases import BACKENDS, T, assert_rel, head, policy_inputs

from gadx.kernels import grpo_loss, token_logprobs, vocab_parallel_grpo_loss
from gadx.kernels.reference import reference_grpo_loss

V = 517
HUGE = 1000.0  # beyond float64's exp range too, so the reference is tested as well


def overflow_inputs():
    """Tokens 0-3 carry the edge cases; the rest are ordinary.
    0: logp - old = +1000, A = 0   (exp overflows; 0 * inf)
    1: logp - old = +1000, A = -1  (dual clip caps it)
    2: logp - old = +30,   A = +1  (high clip; the clamp binds at 20)
    3: ref - logp = +1000, A = 0   (the k3 KL's exp overflows)
    4: logp - old = -1000, A = 0   (exp underflows to 0: was already finite)"""
    h, w, t = head(V)
    adv, _, ref, mask = policy_inputs(h, w, t)
    logp = token_logprobs(h, w, t, backend="torch")
    old = logp.clone()
    old[:5] = logp[:5] - torch.tensor([HUGE, HUGE, 30.0, 0.0, -HUGE])
    adv[:5] = torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0])
    ref = ref.clone()
    ref[3] = logp[3] + HUGE
    mask[:5] = True
    return h, w, t, adv, old, ref, mask


def _finite(loss, metrics, *grads):
    assert math.isfinite(loss.item()), loss
    for k, v in metrics.items():
        assert math.isfinite(v.item()), (k, v)
    for g in grads:
        assert torch.isfinite(g).all(), g


def test_reference_clamps_before_exp():
    h, w, t, adv, old, ref, mask = overflow_inputs()
    hh, ww = h.double().requires_grad_(), w.double().requires_grad_()
    loss, metrics = reference_grpo_loss(hh, ww, t, adv, old, ref, mask, kl_coef=0.1)
    loss.backward()
    _finite(loss, metrics, hh.grad, ww.grad)
    # the clamped ratio is exp(20) at tokens 0-2 (it enters the ratio metric)
    one = reference_grpo_loss(h[:1].double(), w.double(), t[:1], adv[:1], old[:1], None, mask[:1])[1]
    assert one["ratio"].item() == pytest.approx(math.exp(20.0), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overflow_with_zero_advantage_is_finite_and_matches_reference(backend):
    h, w, t, adv, old, ref, mask = overflow_inputs()
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, metrics = grpo_loss(hh, ww, t, adv, old, ref, mask, kl_coef=0.1, backend=backend,
                              chunk_bytes=16 * V * 4)
    (2.0 * loss).backward()
    _finite(loss, metrics, hh.grad, ww.grad)
    rh, rw = h.double().requires_grad_(), w.double().requires_grad_()
    want, want_m = reference_grpo_loss(rh, rw, t, adv, old, ref, mask, kl_coef=0.1)
    (2.0 * want).backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    for k in want_m:
        assert metrics[k].item() == pytest.approx(want_m[k].item(), rel=1e-5, abs=1e-6), k
    # where a clamp binds the term is constant in logp: the hand-written gradient must agree with autograd's
    assert_rel(hh.grad, rh.grad, 1e-4, "d hidden")
    assert_rel(ww.grad, rw.grad, 1e-4, "d weight")


def _tp_worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        h, w, t, adv, old, ref, mask = overflow_inputs()
        lo = 0 if rank == 0 else 259
        shard = w[lo:lo + 259] if rank == 0 else w[lo:]
        res = {}
        for backend in BACKENDS:
            hh, ww = h.clone().requires_grad_(), shard.clone().requires_grad_()
            loss, metrics = vocab_parallel_grpo_loss(hh, ww, t, adv, old, ref, mask, vocab_start=lo,
                                                     group=dist.group.WORLD, kl_coef=0.1, backend=backend,
                                                     chunk_bytes=10 * V * 4, vocab_size=V)
            loss.backward()
            res[backend] = (loss.detach(), metrics, hh.grad, ww.grad)
        torch.save(res, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_overflow_is_finite(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_tp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    h, w, t, adv, old, ref, mask = overflow_inputs()
    want = reference_grpo_loss(h.double(), w.double(), t, adv, old, ref, mask, kl_coef=0.1)[0]
    for r in range(2):
        for backend, (loss, metrics, dh, dw) in torch.load(tmp_path / f"rank{r}.pt").items():
            _finite(loss, metrics, dh, dw)
            assert loss.item() == pytest.approx(want.item(), rel=1e-5), (r, backend)
