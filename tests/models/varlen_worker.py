"""One rank of the packed-attention layout check (tests/models/test_varlen_attention.py): for each
layout TPxPP, the same packed micro-batches through megatron's schedule twice, with the THD params
(gadx's path) and with the dense block-diagonal mask (the reference), forward + backward; asserts
that logits (last stage) and DDP gradients agree, then prints "OK <layout>".

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 python tests/models/varlen_worker.py 2x1 1x2
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from dense_reference import dense_hidden  # noqa: E402

BUDGET = 48


def micro_batches(vocab: int):
    from gadx.train.packing import pack

    g = torch.Generator().manual_seed(5)
    plens, rlens = (3, 2, 5, 1, 4, 2, 6), (6, 4, 9, 3, 4, 7, 2)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in plens]
    responses = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in rlens]
    return pack(prompts, responses, BUDGET, pad_to=BUDGET)  # fixed [1, T] as under PP


def run(tp: int, pp: int) -> None:
    from gadx.models import ModelConfig, build_model
    from gadx.parallel import forward_backward, init_parallel, wrap_ddp

    dims = init_parallel(tp, pp)
    cfg = ModelConfig(family="qwen2", vocab_size=101, hidden_size=32, intermediate_size=48, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
    model = build_model(cfg, parallel=dims, seed=1)
    mbs = micro_batches(cfg.vocab_size)
    assert len(mbs) >= 2 and len({len(mb.packed.doc_lens) for mb in mbs}) >= 1
    chunks = wrap_ddp([model])

    def run_schedule(dense: bool):
        def forward_step(data_iterator, chunk):
            mb = next(data_iterator)
            if dense:
                out = dense_hidden(chunk.module, mb.input_ids_1T, mb.position_ids_1T, mb.doc_ids_1T)
            else:
                out = chunk(mb.input_ids_1T, mb.position_ids_1T, packed_seq_params=mb.packed)

            def loss_func(hidden_1TH):
                logits_TV = chunk.module.logits_from_hidden(hidden_1TH)[0]
                loss = (F.cross_entropy(logits_TV, mb.targets_T, reduction="none") * mb.mask_T).sum()
                return loss, {"logits": logits_TV.detach()}

            return out, loss_func

        stats = forward_backward(chunks, forward_step, iter(mbs), num_microbatches=len(mbs), seq_length=BUDGET,
                                 micro_batch_size=1)
        grads = {n: p.main_grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return [s["logits"] for s in stats], grads

    new_logits, new_grads = run_schedule(dense=False)
    ref_logits, ref_grads = run_schedule(dense=True)
    assert len(new_logits) == (len(mbs) if dims.is_last_stage else 0)
    for a, b in zip(new_logits, ref_logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert new_grads.keys() == ref_grads.keys() and new_grads
    for n in new_grads:
        assert new_grads[n].abs().sum() > 0, n
        torch.testing.assert_close(new_grads[n], ref_grads[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    print(f"OK {tp}x{pp}", flush=True)


def main(layouts: list[str]) -> None:
    warnings.filterwarnings("ignore")
    from gadx.parallel import destroy_parallel

    for i, layout in enumerate(layouts):
        tp, pp = map(int, layout.split("x"))
        run(tp, pp)
        destroy_parallel(keep_process_group=i < len(layouts) - 1)


if __name__ == "__main__":
    main(sys.argv[1:])
