"""Activation recompute (gadx.models.perf): the same gradients as keeping every activation, and
proof that the recompute really ran (the checkpointed code runs twice per training step)."""
import pytest
import torch

from gadx.models.perf import PerfConfig, recompute_kwargs
from tiny_models import model_config

CFG = model_config(num_layers=4)


def _grads(perf, calls):
    """Forward+backward of a packed batch (3 documents) in training mode; the parameter grads."""
    from gadx.models import build_model
    from gadx.models.spec import SDPAttention
    from gadx.parallel import init_parallel

    init_parallel()
    torch.manual_seed(0)
    model = build_model(CFG, perf=perf).train()
    n = {"core": 0}
    orig = SDPAttention.forward

    def counting(self, *a, **k):
        n["core"] += 1
        return orig(self, *a, **k)

    calls.append(n)
    ids = torch.randint(0, CFG.vocab_size, (1, 21), generator=torch.Generator().manual_seed(1))
    docs = torch.tensor([[0] * 8 + [1] * 6 + [2] * 7])
    SDPAttention.forward = counting
    try:
        logits = model.logits(ids, doc_ids_BT=docs)
        (logits.float().logsumexp(-1) * torch.linspace(0.1, 1.0, 21)).sum().backward()
    finally:
        SDPAttention.forward = orig
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, logits.detach()


@pytest.mark.parametrize("perf", [
    PerfConfig(recompute="selective"),
    PerfConfig(recompute="full"),                                    # every layer its own chunk
    PerfConfig(recompute="full", recompute_num_layers=2),            # chunks of 2 layers
    PerfConfig(recompute="full", recompute_method="block", recompute_num_layers=3),
], ids=["selective", "full-uniform1", "full-uniform2", "full-block3"])
def test_recompute_bit_equal_gradients(perf):
    calls = []
    ref, ref_logits = _grads(PerfConfig(), calls)
    got, logits = _grads(perf, calls)
    assert calls[0]["core"] == CFG.num_layers  # no recompute: the core attention once per layer
    # the recompute ran: selective re-runs every layer's core attention; full re-runs the checkpointed layers
    extra = {"selective": CFG.num_layers, "full": perf.recompute_num_layers if perf.recompute_method == "block" else CFG.num_layers}
    assert calls[1]["core"] == CFG.num_layers + extra[perf.recompute]
    assert torch.equal(logits, ref_logits)
    assert ref.keys() == got.keys() and len(ref) > 10
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_recompute_config_errors():
    with pytest.raises(ValueError, match="'sometimes'"):
        PerfConfig(recompute="sometimes")
    with pytest.raises(ValueError, match="recompute_num_layers=3 does not divide the 4"):
        recompute_kwargs(PerfConfig(recompute="full", recompute_num_layers=3), 4)
    with pytest.raises(ValueError, match="exceeds the 2"):
        recompute_kwargs(PerfConfig(recompute="full", recompute_method="block", recompute_num_layers=3), 2)
    assert recompute_kwargs(PerfConfig(), 4) == {}
