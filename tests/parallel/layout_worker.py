"""One rank of the TP/PP equivalence check: for each layout, load a shared HF checkpoint,
take forward-only logits through megatron's schedule, run two DDP + distributed-optimizer
training steps with a custom loss, save back to HF, and write what it saw to
OUT_DIR/tp{TP}pp{PP}/. Several layouts share one launch (imports dominate the cost).

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/parallel/layout_worker.py CKPT OUT_DIR 2x1 1x2

``run`` is also called in-process by the tests for the TP=1 reference.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

B, T, STEPS, MICRO = 2, 12, 2, 2


def batches(vocab: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return [torch.randint(0, vocab, (B, T), generator=g) for _ in range(MICRO)]


def run(ckpt: str, tp: int, pp: int, out_dir: str | None) -> dict | None:
    from gadx.models import from_pretrained, save_pretrained
    from gadx.parallel import build_optimizer, forward_backward, init_parallel, wrap_ddp

    dims = init_parallel(tp, pp)
    model = from_pretrained(ckpt, parallel=dims)
    data = batches(model.config.vocab_size)

    def forward_step(data_iterator, chunk):
        ids_BT = next(data_iterator)
        out = chunk(ids_BT)

        def loss_func(hidden_BTH):
            logits_BTV = chunk.module.logits_from_hidden(hidden_BTH)
            # a custom loss: next-token CE plus a small logit-norm penalty
            ce = F.cross_entropy(logits_BTV[:, :-1].reshape(-1, logits_BTV.shape[-1]), ids_BT[:, 1:].reshape(-1))
            loss = ce + 1e-3 * logits_BTV.square().mean()
            return loss, {"loss": loss.detach(), "logits": logits_BTV.detach()}

        return out, loss_func

    chunks = wrap_ddp([model])
    # adam_eps well above the rounding noise of near-zero grads (e.g. the K bias, which softmax
    # ignores): Adam would otherwise turn that noise into +-lr steps that differ per layout
    opt = build_optimizer(chunks, lr=1e-2, weight_decay=0.01, clip_grad=0.2, adam_eps=1e-4)
    kw = dict(num_microbatches=MICRO, seq_length=T, micro_batch_size=B)
    first = forward_backward(chunks, forward_step, iter(data), forward_only=True, **kw)
    losses, norms = [], []
    for _ in range(STEPS):
        stats = forward_backward(chunks, forward_step, iter(data), optimizer=opt, **kw)
        ok, grad_norm, _ = opt.step()
        assert ok
        norms.append(float(grad_norm))
        losses.append([float(s["loss"]) for s in stats])
    after = forward_backward(chunks, forward_step, iter(data), forward_only=True, **kw)

    # the discriminator, frozen (no DDP): scores at the last valid token of each row
    disc = from_pretrained(ckpt, head="score", parallel=dims, seed=7)
    lengths_B = torch.tensor([T, T // 2])

    def score_step(data_iterator, chunk):
        ids_BT = next(data_iterator)

        def loss_func(hidden_BTH):
            scores_B = chunk.module.score_hidden(hidden_BTH[torch.arange(B), lengths_B - 1])
            return scores_B.sum(), {"scores": scores_B.detach()}

        return chunk(ids_BT), loss_func

    scores = forward_backward([disc], score_step, iter(data), forward_only=True, **kw)
    if out_dir is not None:
        save_pretrained(model, Path(out_dir) / "saved")
    if not (dims.is_last_stage and dims.tp_rank == 0):
        return None
    result = {
        "logits": torch.stack([s["logits"] for s in first]),
        "logits_after": torch.stack([s["logits"] for s in after]),
        "scores": torch.stack([s["scores"] for s in scores]),
        "losses": losses,
        "grad_norms": norms,
    }
    if out_dir is not None:
        torch.save(result, Path(out_dir) / "result.pt")
    return result


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    from gadx.parallel import destroy_parallel

    ckpt, out_dir, layouts = sys.argv[1], sys.argv[2], sys.argv[3:]
    for i, layout in enumerate(layouts):
        tp, pp = map(int, layout.split("x"))
        sub = Path(out_dir) / f"tp{tp}pp{pp}"
        sub.mkdir(parents=True, exist_ok=True)
        run(ckpt, tp, pp, str(sub))
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
