"""Sequence parallelism at TP=2 (gloo, 2 spawned ranks) equals TP=2 without it on the same
weights: logits, log-probs, discriminator scores, the LM-head and Bradley-Terry-like losses, and
every DDP gradient after megatron's schedule, over packed micro-batches of odd and even length
(an odd one is padded to a multiple of TP and sliced back). Workers: sp_worker.py."""
from pathlib import Path

import torch

import sp_worker
from launch import launch

WORKER = Path(sp_worker.__file__)


def test_sp_equals_no_sp_at_tp2(tmp_path):
    launch(WORKER, [tmp_path], 2, timeout=300)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
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
