"""token_logprobs (Triton interpreter and torch fallback) against the float64 reference."""
import pytest
import torch
from kernel_cases import BACKENDS, assert_logp, head

from gadx.kernels import token_logprobs
from gadx.kernels.reference import reference_token_logprobs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("V", [517, 4099])
def test_logp_and_entropy_match_reference(backend, V):
    h, w, t = head(V)
    logp, ent = token_logprobs(h, w, t, temperature=0.7, return_entropy=True, backend=backend)
    ref_logp, ref_ent = reference_token_logprobs(h, w, t, temperature=0.7, return_entropy=True)
    assert logp.dtype == torch.float32 and logp.shape == (37,)
    assert_logp(logp, ref_logp)
    assert_logp(ent, ref_ent, "entropy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_inputs(backend):
    h, w, t = head(517, dtype=torch.bfloat16)
    logp = token_logprobs(h, w, t, backend=backend)
    assert_logp(logp, reference_token_logprobs(h, w, t))  # reference reads the same bf16 values


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["negative", "wide"])
def test_extreme_logits(backend, kind):
    h, w, t = head(4099, kind=kind)
    z = h.double() @ w.double().T
    if kind == "negative":
        assert z.max() < 0 and z.min() < -80
    else:
        assert z.max() > 80 and z.min() < -80
    logp, ent = token_logprobs(h, w, t, return_entropy=True, backend=backend)
    ref_logp, ref_ent = reference_token_logprobs(h, w, t, return_entropy=True)
    assert_logp(logp, ref_logp)
    assert_logp(ent, ref_ent, "entropy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_logp_never_positive(backend):
    # Targets are each row's argmax with a huge margin: the true logp is ~ -1e-30, rounding could go > 0.
    h, w, t = head(517, logit_std=60.0)
    t = (h @ w.T).argmax(1)
    logp = token_logprobs(h, w, t, backend=backend)
    assert (logp <= 0).all(), logp.max()
    assert_logp(logp, reference_token_logprobs(h, w, t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitwise_deterministic(backend):
    h, w, t = head(4099)
    a = token_logprobs(h, w, t, return_entropy=True, backend=backend)
    b = token_logprobs(h, w, t, return_entropy=True, backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_triton_vocab_split_invariance():
    from gadx.kernels.triton_logprobs import fused_stats
    from gadx.kernels.stats import finalize
    h, w, t = head(4099)
    outs = [finalize(fused_stats(h, w, t, 1.0, True, n_splits=n))[1] for n in (1, 3)]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)
    assert_logp(outs[1], reference_token_logprobs(h, w, t))


def test_torch_chunk_invariance():
    h, w, t = head(517)
    full = token_logprobs(h, w, t, backend="torch")
    for rows in (1, 5):
        torch.testing.assert_close(token_logprobs(h, w, t, backend="torch", chunk_bytes=rows * 517 * 4), full,
                                   atol=1e-6, rtol=1e-6)


def test_backend_env_and_bad_name(monkeypatch):
    from gadx.kernels import resolve_backend
    assert resolve_backend(None, torch.device("cpu")) == "triton"  # TRITON_INTERPRET=1 in tests
    monkeypatch.setenv("GADX_KERNEL_BACKEND", "torch")
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    assert resolve_backend("triton", torch.device("cpu")) == "triton"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cuda", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("GADX_KERNEL_BACKEND")
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", torch.device("cpu"))
