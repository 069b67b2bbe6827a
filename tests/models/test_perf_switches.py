"""megatron's throughput switches as gadx config (gadx.models.perf): the mapping onto
TransformerConfig / DDP for a GPU with and without TE / Apex, the clean all-off fallback on
CPU, the token padding (sequence parallelism, FP8), and the trainer's config keys."""
import pytest
import torch

from gadx.models.perf import Kernels, PerfConfig, fusion_plan, token_multiple
from gadx.models.sp import pad_tokens
from tiny_models import model_config

CFG = model_config()
CPU = Kernels(cuda=False, te=False, apex_wgrad=False)
GPU = Kernels(cuda=True, te=False, apex_wgrad=False)
GPU_TE = Kernels(cuda=True, te=True, apex_wgrad=False)
GPU_APEX = Kernels(cuda=True, te=False, apex_wgrad=True)
FLAGS = ("bias_activation_fusion", "bias_dropout_fusion", "masked_softmax_fusion", "apply_rope_fusion")


def test_fusion_plan_by_availability():
    assert fusion_plan("auto", use_te=False, kernels=CPU) == dict.fromkeys(FLAGS, False)
    gpu = fusion_plan("auto", use_te=False, kernels=GPU)
    assert gpu == {**dict.fromkeys(FLAGS, True), "apply_rope_fusion": False}  # fused RoPE is TE's kernel
    assert fusion_plan("auto", use_te=True, kernels=GPU_TE) == dict.fromkeys(FLAGS, True)
    assert fusion_plan("off", use_te=True, kernels=GPU_TE) == dict.fromkeys(FLAGS, False)
    with pytest.raises(ValueError, match="bias_activation_fusion.*gradient_accumulation_fusion"):
        fusion_plan("on", use_te=False, kernels=CPU)
    with pytest.raises(ValueError, match=r"\['apply_rope_fusion'\]"):
        fusion_plan("on", use_te=False, kernels=GPU_APEX)
    with pytest.raises(ValueError, match="fusions must be one of"):
        PerfConfig(fusions="maybe")


def test_transformer_config_flags():
    from gadx.models.gpt import transformer_config

    off = transformer_config(CFG, tp=1, pp=1, dtype=torch.float32, kernels=CPU)
    assert not any(getattr(off, f) for f in FLAGS) and not off.gradient_accumulation_fusion
    # a GPU without TE (megatron itself refuses apply_rope_fusion at construction when TE is absent)
    on = transformer_config(CFG, tp=1, pp=1, dtype=torch.bfloat16, kernels=GPU)
    assert [f for f in FLAGS if getattr(on, f)] == ["bias_activation_fusion", "bias_dropout_fusion", "masked_softmax_fusion"]
    assert not on.gradient_accumulation_fusion  # set on the DDP-wrapped linears only (wrap_ddp)
    assert transformer_config(CFG, tp=2, pp=1, dtype=torch.float32, kernels=CPU,
                              perf=PerfConfig(sequence_parallel=True)).sequence_parallel is True
    assert not transformer_config(CFG, tp=1, pp=1, dtype=torch.float32, kernels=CPU,
                                  perf=PerfConfig(sequence_parallel=True)).sequence_parallel  # no-op at TP=1


def test_cpu_build_falls_back_and_on_refuses():
    from gadx.models import build_model
    from gadx.parallel import init_parallel, wrap_ddp
    from gadx.models.perf import enable_grad_accum_fusion

    init_parallel()
    model = build_model(CFG)  # fusions="auto" by default: all off here, and it runs
    c = model.gpt.config
    assert not any(getattr(c, f) for f in FLAGS) and model.token_multiple == 1
    model.logits(torch.randint(0, 97, (2, 9))).sum().backward()
    with pytest.raises(ValueError, match="fusions='on'"):
        build_model(CFG, perf=PerfConfig(fusions="on"))
    # gradient-accumulation fusion: only with the kernel, never with fusions="off"
    assert enable_grad_accum_fusion(model) == 0
    assert enable_grad_accum_fusion(model, GPU) == 0
    off = build_model(CFG, perf=PerfConfig(fusions="off"))
    assert enable_grad_accum_fusion(off, GPU_APEX) == 0
    n = enable_grad_accum_fusion(model, GPU_APEX)
    assert n == 4 * CFG.num_layers + 1  # qkv, proj, fc1, fc2 per layer + the output layer
    # DDP's overlap_grad_reduce from perf: auto = off without CUDA, "on" honoured
    assert not wrap_ddp([build_model(CFG)])[0].ddp_config.overlap_grad_reduce
    assert wrap_ddp([build_model(CFG, perf=PerfConfig(overlap_grad_reduce="on"))])[0].ddp_config.overlap_grad_reduce


def test_token_multiple():
    assert token_multiple(tp=4, sequence_parallel=True, fp8=False) == 4
    assert token_multiple(tp=4, sequence_parallel=False, fp8=False) == 1
    assert token_multiple(tp=1, sequence_parallel=True, fp8=False) == 1
    assert token_multiple(tp=2, sequence_parallel=False, fp8=True) == 16
    assert token_multiple(tp=2, sequence_parallel=True, fp8=True) == 32  # 16 tokens per rank


def test_pad_tokens_shapes():
    ids, pos, docs = torch.arange(10).view(2, 5), torch.arange(5).expand(2, 5), torch.tensor([[0, 0, 1, 1, 1]] * 2)
    i2, p2, d2, T = pad_tokens(ids, pos, docs, 4)
    assert T == 5 and i2.shape == (2, 8)
    assert d2[:, 5:].tolist() == [[2, 2, 2]] * 2 and p2[:, 5:].tolist() == [[0, 1, 2]] * 2
    i3, p3, d3, _ = pad_tokens(ids, pos, None, 4)
    assert d3 is None and p3[0, 5:].tolist() == [5, 6, 7]  # a causal tail continues the positions
    assert pad_tokens(ids, None, None, 5)[0] is ids


@pytest.mark.parametrize("packed", [True, False])
def test_padded_forward_equals_unpadded(packed):
    """What FP8 (16 tokens) and SP (a multiple of TP) do to a micro-batch, on CPU: padded at the end
    and sliced off, the real tokens' hidden states and gradients do not change."""
    from gadx.models import build_model
    from gadx.parallel import init_parallel

    init_parallel()
    torch.manual_seed(0)
    model = build_model(CFG)
    ids = torch.randint(0, 97, (1, 21))
    docs = torch.tensor([[0] * 9 + [1] * 12]) if packed else None
    out = {}
    for m in (1, 16):
        model.token_multiple = m
        model.zero_grad()
        h = model.hidden(ids, doc_ids_BT=docs)
        assert h.shape == (1, 21, 32)
        (h * torch.linspace(-1, 1, 32)).sum().backward()
        out[m] = h.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(out[16][0], out[1][0], rtol=1e-5, atol=1e-6)
    for k, g in out[1][1].items():
        # the weight grads sum over 32 token rows instead of 21 (zeros added): rounding only
        torch.testing.assert_close(out[16][1][k], g, rtol=1e-5, atol=1e-6 * g.abs().max().item())


def test_train_config_keys():
    from gadx.train.config import load_config, perf_config

    cfg, _ = load_config(["--set", "model.recompute=full", "--set", "model.recompute_num_layers=2",
                          "--set", "parallel.tp=2", "--set", "model.num_kv_heads=2",
                          "--set", "parallel.sequence_parallel=true", "--set", "model.fusions=off",
                          "--set", "parallel.overlap_grad_reduce=on"])
    assert perf_config(cfg) == PerfConfig(recompute="full", recompute_num_layers=2, sequence_parallel=True,
                                          fusions="off", overlap_grad_reduce="on")
    assert perf_config(load_config([])[0]) == PerfConfig()  # defaults: no recompute, no SP, auto switches
    for bad, msg in ((["--set", "model.recompute=some"], "model.recompute must be one of"),
                     (["--set", "model.fusions=yes"], "model.fusions must be one of"),
                     (["--set", "parallel.overlap_grad_reduce=1"], "parallel.overlap_grad_reduce must be one of"),
                     (["--set", "model.recompute_num_layers=0"], "model.recompute_num_layers must be >= 1"),
                     # PP sends fixed-size sequence shards: the budget must split over TP (no padding there)
                     (["--set", "parallel.tp=2", "--set", "parallel.pp=2", "--set", "model.num_kv_heads=2",
                       "--set", "model.num_layers=2", "--set", "parallel.sequence_parallel=true",
                       "--set", "parallel.micro_batch_tokens=511", "--set", "stages.n_samples=2",
                       "--set", "stages.max_response_len=16"], "micro_batch_tokens=511 must be a multiple of 2")):
        with pytest.raises(ValueError, match=msg):
            load_config(bad)
