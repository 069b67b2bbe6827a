"""The megatron training glue the trainer uses, so it never touches parallel_state.

    dims = init_parallel(tp, pp)
    model = build_model(cfg, parallel=dims)            # gadx.models
    chunks = wrap_ddp([model])                          # megatron DDP (grad buffers, DP reduce)
    opt = build_optimizer(chunks, lr=1e-6, weight_decay=0.01, clip_grad=0.2)

    def forward_step(data_iterator, chunk):            # megatron's forward_step_func contract
        batch = next(data_iterator)
        out = chunk(batch["input_ids"])                # GadxModel.forward == .hidden
        def loss_func(hidden_BTH):                     # called on the last stage only
            loss = ...                                 # e.g. gadx.kernels.grpo_loss(...)
            return loss, {"loss": loss.detach()}       # megatron divides loss by num_microbatches
        return out, loss_func

    losses = forward_backward(chunks, forward_step, iter(micro_batches), num_microbatches=4,
                              seq_length=T, micro_batch_size=B)   # list of loss dicts (last stage)
    ok, grad_norm, _ = opt.step()

Frozen models (reference policy, scoring) need no DDP: pass the GadxModels themselves with
``forward_only=True``; ``chunk.module`` is the GadxModel either way.

Every micro-batch must have the same [B, T] under PP (the schedule sends [T, B, H]
activations of that fixed shape). ``forward_backward`` zeroes the DDP grad buffers and the
optimizer's grads first; the optimizer step and the schedule run inside the CPU adapter's
``cpu_device_mode`` when CUDA is absent.
"""
from __future__ import annotations

import functools

import torch

from gadx.parallel.cpu_adapter import cpu_device_mode


def wrap_ddp(models, *, grad_reduce_in_fp32: bool = True, use_distributed_optimizer: bool = True,
             overlap_grad_reduce: bool | None = None, bucket_size: int | None = None) -> list:
    """Wrap each GadxModel (one per virtual pipeline chunk) in megatron DDP.

    ``overlap_grad_reduce`` None: what the models' perf settings say (``perf.overlap_grad_reduce_on()``,
    gadx.models.perf; "auto" = on with CUDA). Gradient-accumulation fusion is turned on here, for
    the wrapped models only (it writes into DDP's ``main_grad``), through the model's own
    ``enable_grad_accum_fusion`` (duck-typed: gadx.parallel does not import gadx.models)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    perf = getattr(models[0], "perf", None)
    if overlap_grad_reduce is None:
        overlap_grad_reduce = perf is not None and perf.overlap_grad_reduce_on()
    for m in models:
        if hasattr(m, "enable_grad_accum_fusion"):
            m.enable_grad_accum_fusion()
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=grad_reduce_in_fp32,
        overlap_grad_reduce=overlap_grad_reduce,
        use_distributed_optimizer=use_distributed_optimizer,
        bucket_size=bucket_size,  # None: megatron's default (40M elements with overlap, else one bucket)
    )
    with cpu_device_mode():
        chunks = [
            DistributedDataParallel(config=m.gpt.config, ddp_config=ddp_config, module=m, disable_bucketing=i > 0)
            for i, m in enumerate(models)
        ]
    config = chunks[0].config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = [c.no_sync for c in chunks] if len(chunks) > 1 else chunks[0].no_sync
    return chunks


def build_optimizer(chunks, *, lr: float, weight_decay: float = 0.01, clip_grad: float = 0.2,
                    adam_beta1: float = 0.9, adam_beta2: float = 0.999, adam_eps: float = 1e-8,
                    use_distributed_optimizer: bool = True):
    """megatron AdamW (decoupled weight decay) over DDP-wrapped chunks; fp32 master weights
    when the model is bf16. ``.step()`` returns (update_successful, grad_norm, num_zeros)."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    params_dtype = chunks[0].config.params_dtype
    cfg = OptimizerConfig(
        optimizer="adam",
        lr=lr,
        weight_decay=weight_decay,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        adam_eps=adam_eps,
        clip_grad=clip_grad,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        params_dtype=params_dtype,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    with cpu_device_mode():
        opt = get_megatron_optimizer(cfg, chunks)
    step = opt.step

    @functools.wraps(step)
    def step_on_cpu(*args, **kwargs):
        with cpu_device_mode():
            return step(*args, **kwargs)

    opt.step = step_on_cpu
    return opt


class _Frozen(torch.nn.Module):
    """Presents an un-wrapped GadxModel (a frozen model: reference policy, scoring) to the schedule
    the way DDP does, without DDP's gradient buffers: ``.config`` is the megatron TransformerConfig
    (GadxModel.config is the ModelConfig), ``.module`` the model, and ``set_input_tensor`` (a
    pipeline stage's input) goes to it."""

    def __init__(self, model):
        super().__init__()
        self.module = model
        self.config = model.gpt.config

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def set_input_tensor(self, input_tensor) -> None:
        self.module.set_input_tensor(input_tensor)


def forward_backward(chunks, forward_step_func, data_iterator, *, num_microbatches: int, seq_length: int,
                     micro_batch_size: int, forward_only: bool = False, optimizer=None) -> list:
    """Run megatron's schedule for this layout; returns the loss dicts (last stage; [] elsewhere)."""
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    bare = [hasattr(c, "gpt") and not isinstance(c, DistributedDataParallel) for c in chunks]  # GadxModels
    if any(bare) and not forward_only:
        raise ValueError("training needs DDP-wrapped chunks (wrap_ddp); un-wrapped models run forward_only")
    chunks = [_Frozen(c) if b else c for c, b in zip(chunks, bare)]
    if not forward_only:
        for c in chunks:
            if isinstance(c, DistributedDataParallel):
                c.zero_grad_buffer()
        if optimizer is not None:
            optimizer.zero_grad()
    with cpu_device_mode():
        return get_forward_backward_func()(
            forward_step_func=forward_step_func,
            data_iterator=data_iterator,
            model=chunks,
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch_size,
            forward_only=forward_only,
        )
