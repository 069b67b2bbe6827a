"""Sequence parallelism at TP=2 (gloo, 2 spawned ranks) equals TP=2 without it on the same
weights: logits, log-probs, discriminator scores, the LM-head and Bradley-Terry-like losses, and
every DDP gradient after megatron's schedule, over packed micro-batches of odd and even length
(an odd one is padded to a multiple of TP and sliced back). Workers: sp_worker.py.
The same launch then checks DDP's overlap_grad_reduce at DP=2 (test_overlap_grad_reduce_at_dp2)."""
from pathlib import Path

import pytest
import torch

import sp_worker
from launch import launch

WORKER = Path(sp_worker.__file__)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp")
    launch(WORKER, [out], 2, timeout=300)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_sp_equals_no_sp_at_tp2(results):
    for r in results:
        base, sp = r["base"], r["sp"]
        assert (base["token_multiple"], sp["token_multiple"]) == (1, 2)
        assert base["layer_rows"] == [21] and sp["layer_rows"] == [11]  # 21 tokens -> 22 padded, 11 per rank
        for k in ("logits", "logp", "scores", "g_losses", "d_losses"):
            torch.testing.assert_close(sp[k], base[k], rtol=1e-6, atol=1e-6, msg=k)
        for model in ("g_grads", "d_grads"):
            assert base[model].keys() == sp[model].keys()
            for name, ref in base[model].items():
                # SP sums the norm-weight grads over the ranks' token halves: another summation order
                torch.testing.assert_close(sp[model][name], ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item(),
                                           msg=f"{model} {name}")


def test_overlap_grad_reduce_at_dp2(results):
    for r in results:
        ov = r["overlap"]
        assert (ov["ddp_off"], ov["ddp_on"]) == (False, True)
        for name, ref in ov["grads_off"].items():
            assert torch.equal(ov["grads_on"][name], ref), name
    # the two ranks had different data: the grads compared are the DP-reduced ones
    assert results[0]["overlap"]["grads_on"].keys() == results[1]["overlap"]["grads_on"].keys()
