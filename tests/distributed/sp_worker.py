"""One rank of tests/distributed/test_sequence_parallel.py: TP=2 with and without sequence
parallelism on the same weights; saves logits, log-probs, losses, scores and DDP gradients.

    python sp_worker.py OUT_DIR        (under launch.launch, world 2)
"""
import sys
from pathlib import Path

import torch

from gadx.models import ModelConfig, build_model
from gadx.models.perf import PerfConfig
from gadx.parallel import destroy_parallel, forward_backward, init_parallel, wrap_ddp
from gadx.train import heads

# odd vocab (padded at TP=2), GQA, QKV bias, tied embeddings
CFG = ModelConfig(family="qwen2", vocab_size=517, hidden_size=64, intermediate_size=96, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True, tie_embeddings=True)


def batch(T: int, n_docs: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids_1T = torch.randint(0, CFG.vocab_size, (1, T), generator=g)
    cuts = sorted(torch.randperm(T - 1, generator=g)[: n_docs - 1].add(1).tolist())
    doc_1T = torch.zeros(1, T, dtype=torch.long)
    for c in cuts:
        doc_1T[0, c:] += 1
    targets_T = torch.randint(0, CFG.vocab_size, (T,), generator=g)
    mask_T = (torch.rand(T, generator=g) > 0.3).float()
    adv_T = torch.randn(T, generator=g)
    old_T = -torch.rand(T, generator=g) * 3
    last_N = torch.tensor([c - 1 for c in cuts] + [T - 1])
    return dict(ids=ids_1T, docs=doc_1T, targets=targets_T, mask=mask_T, adv=adv_T, old=old_T, last=last_N)


# odd T (padded to a multiple of TP under SP) and even T; several documents each
MBS = [batch(21, 3, 1), batch(16, 2, 2), batch(13, 1, 3)]


def run(sp: bool, state: dict | None, dims) -> tuple[dict, dict]:
    perf = PerfConfig(sequence_parallel=sp)
    torch.manual_seed(0)
    g = build_model(CFG, parallel=dims, perf=perf)
    d = build_model(CFG, head="score", parallel=dims, perf=perf, seed=3)
    if state is not None:  # the SP models get the non-SP models' exact weights
        g.load_state_dict(state["g"])
        d.load_state_dict(state["d"])
    out = {"token_multiple": g.token_multiple}
    rows = []  # the token rows a decoder layer sees on this rank: T/TP under SP
    hook = g.gpt.decoder.layers[0].register_forward_pre_hook(
        lambda m, a, kw: rows.append(kw["hidden_states"].shape[0]), with_kwargs=True)
    with torch.no_grad():
        mb = MBS[0]
        out["logits"] = g.logits(mb["ids"], doc_ids_BT=mb["docs"])
        hook.remove()
        out["layer_rows"] = rows
        out["scores"] = d.score_packed(mb["ids"], mb["docs"], mb["last"])
        h = g.hidden(mb["ids"], doc_ids_BT=mb["docs"])[0]
        out["logp"] = heads.token_logprobs(g, h, mb["targets"], temperature=0.8)[0]
    saved = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in m.state_dict().items()}
             for n, m in (("g", g), ("d", d))}

    # training through megatron's schedule + DDP (finalize_model_grads all-reduces the SP norm grads)
    for name, model in (("g", g), ("d", d)):
        chunks = wrap_ddp([model])

        def fs(it, chunk, model=model, name=name):
            mb = next(it)
            hidden_1TH = chunk(mb["ids"], None, mb["docs"])

            def loss_func(hidden_1TH):
                h_TH = hidden_1TH[0]
                if name == "g":
                    nll = heads.nll_sum(model, h_TH, mb["targets"], mb["mask"])
                    grpo, _ = heads.grpo_loss(model, h_TH, mb["targets"], mb["adv"], mb["old"], mb["old"] - 0.1,
                                              mb["mask"], normalizer=mb["mask"].sum())
                    loss = nll / 50 + grpo
                else:  # a Bradley-Terry-like loss on the last-token scores
                    s_N = model.score_hidden(h_TH[mb["last"]])
                    loss = -torch.nn.functional.logsigmoid(s_N - s_N.flip(0) + 0.3).sum()
                return loss, {"loss": loss.detach()}

            return hidden_1TH, loss_func

        losses = forward_backward(chunks, fs, iter(MBS), num_microbatches=len(MBS),
                                  seq_length=max(mb["ids"].shape[1] for mb in MBS), micro_batch_size=1)
        out[f"{name}_losses"] = torch.stack([x["loss"] for x in losses])
        out[f"{name}_grads"] = {k: p.main_grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    return out, saved


def overlap(dims) -> dict:
    """DP=2: DDP with overlap_grad_reduce on (each bucket's reduce issued during backward) against
    off, each rank its own micro-batches; the reduced gradients."""
    out = {}
    state = None
    for mode in ("off", "on"):
        torch.manual_seed(0)
        g = build_model(CFG, parallel=dims, perf=PerfConfig(overlap_grad_reduce=mode))
        if state is None:
            state = {k: v.clone() if torch.is_tensor(v) else v for k, v in g.state_dict().items()}
        else:
            g.load_state_dict(state)
        # small buckets so that several reduce while backward still runs; all-reduce (no distributed
        # optimizer) so that every gradient element is reduced and comparable (after a reduce-scatter
        # only each rank's own shard is, and the shards depend on the bucket layout)
        chunks = wrap_ddp([g], bucket_size=5000, use_distributed_optimizer=False)
        out[f"ddp_{mode}"] = chunks[0].ddp_config.overlap_grad_reduce

        def fs(it, chunk, g=g):
            mb = next(it)
            h = chunk(mb["ids"], None, mb["docs"])
            def loss_func(h_1TH):
                loss = heads.nll_sum(g, h_1TH[0], mb["targets"], mb["mask"]) / 50
                return loss, {"loss": loss.detach()}
            return h, loss_func

        mbs = [MBS[dims.rank], MBS[2]]
        forward_backward(chunks, fs, iter(mbs), num_microbatches=2, seq_length=21, micro_batch_size=1)
        out[f"grads_{mode}"] = {k: p.main_grad.clone() for k, p in g.named_parameters() if p.requires_grad}
    return out


def main(out_dir: str) -> None:
    dims = init_parallel(2, 1)
    base, state = run(False, None, dims)
    sp, _ = run(True, state, dims)
    destroy_parallel(keep_process_group=True)
    ov = overlap(init_parallel(1, 1))
    torch.save({"base": base, "sp": sp, "overlap": ov}, Path(out_dir) / f"rank{dims.rank}.pt")
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1])
