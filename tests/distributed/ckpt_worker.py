"""One rank of the layout-changing checkpoint check. For each layout TPxPP given on the
command line: build a randomly initialised student (fp32) and discriminator (bf16 backbone,
fp32 head) at that layout, load the TP1PP1 sharded checkpoint REF, then write to
OUT/tp{TP}pp{PP}/:
  gathered_rank{R}.pt   gather_hf_state_dict of both models on this rank (to="all"), and
                        the to="first_stage" result (empty off stage 0)
  logits.pt             forward-only logits through megatron's schedule (last stage, TP rank 0)
  ckpt/                 the models saved again at this layout (for the load-back at TP1)
  timing_rank{R}.json   seconds for load / gather / save
With --opt OPTREF (a TP1 student + Adam state after one step), also OUT/tp{TP}pp{PP}/:
  opt_ckpt/             that state loaded and saved again at this layout
  opt_step_rank{R}.pt   the weights (gathered) and grad norm after the next step here

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/ckpt_worker.py [--opt OPTREF] REF OUT 2x1 1x2
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import torch

B, T = 2, 10
STUDENT_SEED, DISC_SEED = 11, 12  # random init that the checkpoint must overwrite


def batch(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(99))


def build_pair(cfg, dims):
    from gadx.models import build_model

    g = build_model(cfg, parallel=dims, seed=STUDENT_SEED)
    d = build_model(cfg, head="score", parallel=dims, dtype=torch.bfloat16, seed=DISC_SEED)
    return g, d


def schedule_logits(model, dims, ids_BT):
    from gadx.parallel import forward_backward

    def step(data_iterator, chunk):
        x = next(data_iterator)

        def loss_func(hidden_BTH):
            logits = chunk.module.logits_from_hidden(hidden_BTH)
            return logits.sum(), {"logits": logits.detach()}

        return chunk(x), loss_func

    out = forward_backward([model], step, iter([ids_BT]), num_microbatches=1, seq_length=T,
                           micro_batch_size=B, forward_only=True)
    return out[0]["logits"] if out else None


def player(model):
    """The model wrapped for megatron's schedule and its distributed Adam (fixed hyperparameters)."""
    from gadx.parallel import build_optimizer, wrap_ddp

    chunks = wrap_ddp([model])
    return chunks, build_optimizer(chunks, lr=1e-2, adam_eps=1e-4)


def train_step(chunks, opt, ids_BT):
    """One optimizer step on a logsumexp loss; returns the grad norm."""
    from gadx.parallel import forward_backward

    def step(data_iterator, chunk):
        x = next(data_iterator)

        def loss_func(hidden_BTH):
            loss = chunk.module.logits_from_hidden(hidden_BTH).logsumexp(-1).mean()
            return loss, {"loss": loss.detach()}

        return chunk(x), loss_func

    forward_backward(chunks, step, iter([ids_BT]), num_microbatches=1, seq_length=ids_BT.shape[1],
                     micro_batch_size=ids_BT.shape[0], optimizer=opt)
    ok, grad_norm, _ = opt.step()
    assert ok
    return grad_norm


def resume_optimizer(opt_ref: str, cfg, dims, out: Path) -> None:
    """Load a student + Adam state saved at TP1 after one step, save it again at this layout
    (OUT/opt_ckpt, for the load-back at TP1), take the next step; write the gathered weights
    and grad norm to OUT/opt_step_rank{R}.pt."""
    from gadx.models import build_model
    from gadx.parallel import gather_hf_state_dict, load_sharded, save_sharded

    chunks, opt = player(build_model(cfg, parallel=dims, seed=STUDENT_SEED))
    load_sharded(opt_ref, {"student": chunks[0]}, optimizers={"student": opt})
    save_sharded(out / "opt_ckpt", {"student": chunks[0]}, optimizers={"student": opt})
    grad_norm = train_step(chunks, opt, batch(cfg.vocab_size))
    torch.save({"weights": gather_hf_state_dict(chunks[0].module), "grad_norm": grad_norm},
               out / f"opt_step_rank{dims.rank}.pt")


def run(ref: str, tp: int, pp: int, out: Path, opt_ref: str | None = None) -> None:
    from gadx.models import ModelConfig
    from gadx.parallel import gather_hf_state_dict, init_parallel, load_sharded, save_sharded

    dims = init_parallel(tp, pp)
    meta = json.loads((Path(ref) / "gadx_extra.json").read_text())
    cfg = ModelConfig.from_hf_dict(meta["configs"]["student"])
    g, d = build_pair(cfg, dims)
    t0 = time.perf_counter()
    extra = load_sharded(ref, {"student": g, "discriminator": d})
    t_load = time.perf_counter() - t0
    assert extra == {"step": 3}, extra
    t0 = time.perf_counter()
    full = {"student": gather_hf_state_dict(g), "discriminator": gather_hf_state_dict(d)}
    t_gather = time.perf_counter() - t0
    first = {"student": gather_hf_state_dict(g, to="first_stage"),
             "discriminator": gather_hf_state_dict(d, to="first_stage")}
    torch.save({"all": full, "first_stage": first, "pp_rank": dims.pp_rank},
               out / f"gathered_rank{dims.rank}.pt")
    logits = schedule_logits(g, dims, batch(cfg.vocab_size))
    if logits is not None and dims.tp_rank == 0:
        torch.save(logits, out / "logits.pt")
    t_save = save_sharded(out / "ckpt", {"student": g, "discriminator": d}, extra={"step": 3})
    (out / f"timing_rank{dims.rank}.json").write_text(
        json.dumps({"load_s": t_load, "gather_s": t_gather, "save_s": t_save}))
    if opt_ref is not None:
        resume_optimizer(opt_ref, cfg, dims, out)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    from gadx.parallel import destroy_parallel

    args = sys.argv[1:]
    opt_ref = None
    if args[0] == "--opt":
        opt_ref, args = args[1], args[2:]
    ref, out_root, layouts = args[0], Path(args[1]), args[2:]
    for i, layout in enumerate(layouts):
        tp, pp = map(int, layout.split("x"))
        sub = out_root / f"tp{tp}pp{pp}"
        sub.mkdir(parents=True, exist_ok=True)
        run(ref, tp, pp, sub, opt_ref)
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
