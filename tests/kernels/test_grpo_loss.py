"""grpo_loss (Triton interpreter and torch fallback): loss, metrics, d hidden, d weight vs float64."""
import math

import pytest
import torch
from kernel_cases import BACKENDS, T, assert_rel, head, policy_inputs

from gadx.kernels import grpo_loss, token_logprobs
from gadx.kernels.reference import reference_grpo_loss


def run_ours(h, w, t, adv, old, ref, mask, *, upstream=1.0, **kw):
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, metrics = grpo_loss(hh, ww, t, adv, old, ref, mask, **kw)
    (loss * upstream).backward()
    return loss.detach(), metrics, hh.grad, ww.grad


def run_ref(h, w, t, adv, old, ref, mask, *, upstream=1.0, backend=None, chunk_bytes=None, **kw):
    hh, ww = h.double().requires_grad_(), w.double().requires_grad_()
    loss, metrics = reference_grpo_loss(hh, ww, t, adv, old, ref, mask, **kw)
    (loss * upstream).backward()
    return loss.detach(), metrics, hh.grad, ww.grad


def check(h, w, t, adv, old, ref, mask, *, grad_rel=1e-4, **kw):
    ours = run_ours(h, w, t, adv, old, ref, mask, **kw)
    want = run_ref(h, w, t, adv, old, ref, mask, **kw)
    assert ours[0].dtype == torch.float32 and ours[0].dim() == 0
    assert math.isclose(ours[0].item(), want[0].item(), rel_tol=1e-5, abs_tol=1e-6), (ours[0], want[0])
    assert set(ours[1]) == set(want[1])
    for k in want[1]:
        assert math.isclose(ours[1][k].item(), want[1][k].item(), rel_tol=1e-5, abs_tol=1e-6), (k, ours[1], want[1])
    assert ours[2].dtype == h.dtype and ours[3].dtype == w.dtype
    assert_rel(ours[2], want[2], grad_rel, "d hidden")
    assert_rel(ours[3], want[3], grad_rel, "d weight")
    return ours, want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V", [517, 4099])
def test_matches_reference(backend, V):
    # temperature != 1, kl > 0, entropy, upstream grad != 1, a few tokens per chunk
    h, w, t = head(V)
    adv, old, ref, mask = policy_inputs(h, w, t, temperature=0.7)
    check(h, w, t, adv, old, ref, mask, temperature=0.7, kl_coef=0.1, compute_entropy=True, upstream=-2.5,
          backend=backend, chunk_bytes=16 * V * 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs(backend):
    h, w, t = head(517, dtype=torch.bfloat16)
    adv, old, ref, mask = policy_inputs(h, w, t)
    # grads come back in bf16: the tolerance is bf16's rounding of the result, not of the computation
    check(h, w, t, adv, old, ref, mask, kl_coef=0.05, backend=backend, grad_rel=8e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_dropped_by_zero_coef_or_no_ref(backend):
    h, w, t = head(517)
    adv, old, ref, mask = policy_inputs(h, w, t)
    zero = check(h, w, t, adv, old, ref, mask, kl_coef=0.0, backend=backend)[0]
    none = check(h, w, t, adv, old, None, mask, kl_coef=0.1, backend=backend)[0]
    assert torch.equal(zero[0], none[0]) and torch.equal(zero[3], none[3])
    assert zero[1]["kl"] > 0 and none[1]["kl"] == 0  # the metric is still reported when ref is given
    with_kl = run_ours(h, w, t, adv, old, ref, mask, kl_coef=0.1, backend=backend)
    assert with_kl[0] > zero[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_clip_sides_and_dual_clip_forced(backend):
    h, w, t = head(517)
    adv, _, ref, _ = policy_inputs(h, w, t)
    logp = token_logprobs(h, w, t, backend="torch")
    # four regimes: ratio e (A>0: high clip), e^-1 (A<0: low clip), e^2 (A<0: dual clip), ~1 (no clip)
    k = torch.arange(T) % 4
    log_ratio = torch.tensor([1.0, -1.0, 2.0, 0.05])[k]
    adv = torch.where(k == 0, adv.abs() + 0.1, torch.where((k == 1) | (k == 2), -adv.abs() - 0.1, adv))
    old = logp - log_ratio
    mask = torch.ones(T, dtype=torch.bool)
    ours, want = check(h, w, t, adv, old, ref, mask, backend=backend)
    assert ours[1]["clip_frac"] > 0.4
    no_dual = run_ours(h, w, t, adv, old, ref, mask, dual_clip=None, backend=backend)
    assert no_dual[0] > ours[0] + 0.1  # the dual clip capped the k == 2 tokens
    check(h, w, t, adv, old, ref, mask, dual_clip=None, clip_low=0.1, clip_high=0.28, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_rows_ignore_garbage_and_empty_mask_gives_zero(backend):
    h, w, t = head(517)
    adv, old, ref, mask = policy_inputs(h, w, t)
    mask[:5] = False
    old[:5], ref[:5], adv[:5] = float("-inf"), float("nan"), float("nan")  # padding may hold anything
    check(h, w, t, adv, old, ref, mask, kl_coef=0.1, backend=backend)
    loss, metrics, dh, dw = run_ours(h, w, t, adv, old, ref, torch.zeros(T, dtype=torch.bool), backend=backend)
    assert loss == 0 and all(v == 0 for v in metrics.values())
    assert torch.count_nonzero(dh) == 0 and torch.count_nonzero(dw) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["negative", "wide"])
def test_extreme_logits(backend, kind):
    h, w, t = head(4099, kind=kind)
    adv, old, ref, mask = policy_inputs(h, w, t)
    check(h, w, t, adv, old, ref, mask, kl_coef=0.1, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalizer_tensor_and_float(backend):
    h, w, t = head(517)
    adv, old, ref, mask = policy_inputs(h, w, t)
    a = check(h, w, t, adv, old, ref, mask, normalizer=torch.tensor(123.0), backend=backend)[0]
    b = run_ours(h, w, t, adv, old, ref, mask, normalizer=123.0, backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[3], b[3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_size_invariance_and_determinism(backend):
    h, w, t = head(517)
    adv, old, ref, mask = policy_inputs(h, w, t)
    kw = dict(kl_coef=0.1, compute_entropy=True, backend=backend)
    runs = {rows: run_ours(h, w, t, adv, old, ref, mask, chunk_bytes=rows * 517 * 4, **kw) for rows in (1, 7, T)}
    for rows in (1, 7):
        # GEMMs of 1 vs 37 rows round differently; chunking must not add more than that
        torch.testing.assert_close(runs[rows][0], runs[T][0], atol=1e-6, rtol=1e-5)
        assert_rel(runs[rows][2], runs[T][2], 1e-5, f"d hidden, {rows}-row chunks")
        assert_rel(runs[rows][3], runs[T][3], 1e-5, f"d weight, {rows}-row chunks")
    again = run_ours(h, w, t, adv, old, ref, mask, chunk_bytes=7 * 517 * 4, **kw)
    for x, y in zip((again[0], again[2], again[3], *again[1].values()),
                    (runs[7][0], runs[7][2], runs[7][3], *runs[7][1].values())):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ratio_is_one_against_token_logprobs(backend):
    # old log-probs from the no-grad path: the loss path must agree (ratio == 1 up to fp32 rounding)
    h, w, t = head(517)
    old = token_logprobs(h, w, t, temperature=0.9, backend=backend)
    adv = torch.randn(T)
    _, metrics = grpo_loss(h, w, t, adv, old, None, torch.ones(T), temperature=0.9, backend=backend)
    assert abs(metrics["ratio"].item() - 1) < 2e-6 and metrics["clip_frac"] == 0


def test_no_grad_inputs_skip_backward_work():
    h, w, t = head(517)
    adv, old, ref, mask = policy_inputs(h, w, t)
    loss, _ = grpo_loss(h, w, t, adv, old, ref, mask, backend="torch")
    assert not loss.requires_grad
    want = reference_grpo_loss(h, w, t, adv, old, ref, mask)[0]
    assert math.isclose(loss.item(), want.item(), rel_tol=1e-5, abs_tol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_on_policy_old_none_matches_reference_and_explicit_old(backend):
    # old=None (the step skips the old-log-prob forward when there is one update per rollout):
    # the same loss, metrics and gradients as passing this pass's own log-probs as old
    h, w, t = head(517)
    adv, _, ref, mask = policy_inputs(h, w, t)
    ours, _ = check(h, w, t, adv, None, ref, mask, temperature=0.9, backend=backend)
    old = token_logprobs(h, w, t, temperature=0.9, backend=backend)
    explicit = run_ours(h, w, t, adv, old, ref, mask, temperature=0.9, backend=backend)
    assert math.isclose(ours[0].item(), explicit[0].item(), rel_tol=1e-5, abs_tol=1e-6)
    assert abs(ours[1]["ratio"].item() - 1) < 1e-6 and ours[1]["clip_frac"] == 0
    assert_rel(ours[2], explicit[2], 1e-4, "d hidden")
    assert_rel(ours[3], explicit[3], 1e-4, "d weight")
