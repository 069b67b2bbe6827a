"""Inputs and comparison helpers for the kernel tests (tiny, deliberately odd shapes)."""
import torch

from gadx.kernels.reference import reference_token_logprobs

T, H = 37, 96
BACKENDS = ["torch", "triton"]


def head(V, *, dtype=torch.float32, logit_std=3.0, kind="normal", seed=0):
    """hidden [T, H], weight [V, H], targets [T].

    kind="normal": logits ~ N(0, logit_std). kind="wide" / "negative": small-integer inputs whose
    logits are exact in fp32 (so errors are the kernel's, not the GEMM's) and span about +-130,
    or are all negative in about [-110, -20]."""
    g = torch.Generator().manual_seed(seed)
    if kind == "wide":
        h = torch.randint(-1, 2, (T, H), generator=g).float()
        w = torch.randint(-8, 9, (V, H), generator=g).float()
    elif kind == "negative":
        h = torch.randint(0, 2, (T, H), generator=g).float()
        w = -torch.randint(0, 4, (V, H), generator=g).float()
        h[:, 0], w[:, 0] = 1.0, w[:, 0] - 1.0  # every logit <= -1
    else:
        h = torch.randn(T, H, generator=g)
        w = torch.randn(V, H, generator=g) * (logit_std / H ** 0.5)
    t = torch.randint(0, V, (T,), generator=g)
    return h.to(dtype), w.to(dtype), t


def policy_inputs(h, w, t, *, temperature=1.0, seed=1, old_noise=0.3, ref_noise=0.2):
    """advantages, old, ref log-probs near the current policy, and a mask with ~20% padding."""
    g = torch.Generator().manual_seed(seed)
    logp = reference_token_logprobs(h, w, t, temperature=temperature).float()
    adv = torch.randn(T, generator=g)
    old = logp + old_noise * torch.randn(T, generator=g)
    ref = logp + ref_noise * torch.randn(T, generator=g)
    mask = torch.rand(T, generator=g) > 0.2
    return adv, old, ref, mask


def assert_rel(ours, ref, rel, what):
    """max |ours - ref| <= rel * max |ref| (+1e-12), with a verbose report."""
    ours, ref = ours.double(), ref.double()
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale + 1e-12, f"{what}: max err {err:.3e} > {rel:g} * max|ref| {scale:.3e}"


def assert_logp(ours, ref, what="logp", tol=1e-5):
    torch.testing.assert_close(ours.double(), ref.double(), atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")
