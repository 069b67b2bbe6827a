"""Vocab-parallel kernels at TP=2 over gloo equal the single-rank results (two spawned processes)."""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kernel_cases import assert_logp, assert_rel, head, policy_inputs

from gadx.kernels import grpo_loss, token_logprobs, vocab_parallel_grpo_loss, vocab_parallel_token_logprobs

V = 517
KW = dict(temperature=0.8, kl_coef=0.1, compute_entropy=True)


def _worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        h, w, t = head(V)
        adv, old, ref, mask = policy_inputs(h, w, t, temperature=0.8)
        lo = 0 if rank == 0 else 259  # uneven shards: 259 + 258
        shard = w[lo:lo + 259] if rank == 0 else w[lo:]
        res = {"lo": lo}
        for backend in ("torch", "triton"):
            res[backend + "_logp"] = vocab_parallel_token_logprobs(
                h, shard, t, vocab_start=lo, group=dist.group.WORLD, temperature=0.8, return_entropy=True,
                backend=backend, vocab_size=V)
            hh, ww = h.clone().requires_grad_(), shard.clone().requires_grad_()
            loss, metrics = vocab_parallel_grpo_loss(hh, ww, t, adv, old, ref, mask, vocab_start=lo,
                                                     group=dist.group.WORLD, backend=backend,
                                                     chunk_bytes=10 * V * 4, vocab_size=V, **KW)
            (3.0 * loss).backward()
            res[backend + "_loss"] = (loss.detach(), metrics, hh.grad, ww.grad)
        torch.save(res, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # gloo sometimes aborts at shutdown without it
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tp2_equals_single_rank(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    h, w, t = head(V)
    adv, old, ref, mask = policy_inputs(h, w, t, temperature=0.8)
    logp, ent = token_logprobs(h, w, t, temperature=0.8, return_entropy=True, backend="torch")
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss, metrics = grpo_loss(hh, ww, t, adv, old, ref, mask, backend="torch", **KW)
    (3.0 * loss).backward()
    for backend in ("torch", "triton"):
        for r in ranks:
            assert_logp(r[backend + "_logp"][0], logp)
            assert_logp(r[backend + "_logp"][1], ent, "entropy")
            tp_loss, tp_metrics, tp_dh, _ = r[backend + "_loss"]
            torch.testing.assert_close(tp_loss, loss.detach(), atol=1e-6, rtol=1e-5)
            for k in metrics:
                torch.testing.assert_close(tp_metrics[k], metrics[k], atol=1e-6, rtol=1e-5)
            assert_rel(tp_dh, hh.grad, 1e-5, f"{backend} d hidden (all-reduced over TP)")
        dw = torch.cat([ranks[0][backend + "_loss"][3], ranks[1][backend + "_loss"][3]])
        assert_rel(dw, ww.grad, 1e-5, f"{backend} d weight shards")
