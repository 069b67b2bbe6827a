"""Bad input raises ValueError before any kernel launch."""
import pytest
import torch
from kernel_cases import T, head, policy_inputs

from gadx.kernels import grpo_loss, token_logprobs

h, w, t = head(517)
adv, old, ref, mask = policy_inputs(h, w, t)


@pytest.mark.parametrize("args, match", [
    ((h[:, :95], w, t), "weight must be"),
    ((h, w, t[:-1]), "targets must have shape"),
    ((h, w, t + 517), r"targets must lie in \[0, 517\)"),
    ((h, w, t - 1 - t.min()), "targets must lie"),
    ((h.long(), w, t), "floating point"),
    ((h[:0], w, t[:0]), "non-empty"),
    ((h.double(), w, t), "dtype"),
    ((h, w, t.float()), "integer"),
    ((h, w, t.to("meta")), "is on meta"),
    ((h[0], w, t), "2-D"),
])
def test_bad_head_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        token_logprobs(*args)
    with pytest.raises(ValueError, match=match):
        grpo_loss(*args, adv, old, ref, mask)


@pytest.mark.parametrize("kw, match", [
    (dict(advantages=adv[:-1]), "advantages must have shape"),
    (dict(old_logprobs=old.to("meta")), "old_logprobs is on meta"),
    (dict(mask=mask.long()), "mask must be bool"),
    (dict(normalizer=0.0), "normalizer"),
    (dict(normalizer=torch.ones(2)), "normalizer"),
    (dict(clip_low=1.0), "clip_low"),
    (dict(dual_clip=0.5), "dual_clip"),
    (dict(kl_coef=-1.0), "kl_coef"),
    (dict(temperature=0.0), "temperature"),
    (dict(chunk_bytes=0), "chunk_bytes"),
    (dict(backend="cuda"), "backend"),
])
def test_bad_loss_inputs(kw, match):
    args = dict(advantages=adv, old_logprobs=old, ref_logprobs=ref, mask=mask)
    args.update({k: kw.pop(k) for k in list(kw) if k in args})
    with pytest.raises(ValueError, match=match):
        grpo_loss(h, w, t, args["advantages"], args["old_logprobs"], args["ref_logprobs"], args["mask"], **kw)
    assert T == h.shape[0]
