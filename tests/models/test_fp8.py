"""FP8: refused with a clear ValueError, before anything is built, when it cannot really be
applied (local spec: megatron would silently train in bf16; no transformer_engine). On a
GPU with TE (marked ``gpu``): 20 steps of a small model in FP8 and in bf16 give losses that
agree within FP8_LOSS_ATOL.
"""
import pytest
import torch

from gadx.models import ModelConfig, build_model
from gadx.models.fp8 import FP8Config, transformer_config_kwargs

# |loss_fp8 - loss_bf16| at every one of the 20 steps (nats; loss starts at ~ln(1024) = 6.9).
# E4M3 keeps ~2 significant digits per GEMM operand with a per-tensor scale; on a model this
# small the per-step loss moves by well under 0.1 nats from that rounding.
FP8_LOSS_ATOL = 0.1
FP8_STEPS = 20


def tiny_cfg(**kw):
    base = dict(family="qwen2", vocab_size=1024, hidden_size=256, intermediate_size=512, num_layers=2,
                num_heads=4, num_kv_heads=2, head_dim=64, qkv_bias=True, tie_embeddings=False,
                max_position_embeddings=256)
    return ModelConfig(**{**base, **kw})


@pytest.fixture
def no_build(monkeypatch):
    """Any model construction (or parallel set-up) inside the test is a failure."""
    from megatron.core.models.gpt import GPTModel

    import gadx.parallel.state as state

    def boom(*a, **k):
        raise AssertionError("built something before refusing fp8")

    monkeypatch.setattr(GPTModel, "__init__", boom)
    monkeypatch.setattr(state, "init_parallel", boom)


@pytest.mark.parametrize("recipe", ["tensorwise", "delayed", "mxfp8", "blockwise"])
def test_fp8_with_local_spec_is_refused(recipe, no_build):
    with pytest.raises(ValueError, match="silently ignores fp8"):
        build_model(tiny_cfg(), dtype=torch.bfloat16, fp8=recipe)


def test_fp8_without_te_is_refused(monkeypatch, no_build, tmp_path):
    import gadx.models.spec as spec
    from gadx.models import from_pretrained

    monkeypatch.setattr(spec, "te_available", lambda: False)
    with pytest.raises(ValueError, match="transformer_engine, which is not importable"):
        build_model(tiny_cfg(), dtype=torch.bfloat16, use_te=True, fp8="tensorwise")
    with pytest.raises(ValueError, match="transformer_engine, which is not importable"):
        from_pretrained(tmp_path, dtype=torch.bfloat16, use_te=True, fp8="delayed")
    with pytest.raises(ValueError, match="transformer_engine is not importable"):
        build_model(tiny_cfg(), use_te=True)


def test_bad_fp8_settings():
    with pytest.raises(ValueError, match="recipe must be one of"):
        FP8Config(recipe="current")
    with pytest.raises(ValueError, match="format must be one of"):
        FP8Config(format="e5m2")
    with pytest.raises(ValueError, match="fp8 must be None"):
        build_model(tiny_cfg(), fp8=8)


def test_fp8_fields_reach_transformer_config():
    from gadx.models.gpt import transformer_config

    kw = transformer_config_kwargs(FP8Config("delayed", margin=1, amax_history_len=16))
    assert kw == dict(fp8="hybrid", fp8_recipe="delayed", fp8_margin=1, fp8_amax_history_len=16,
                      fp8_amax_compute_algo="max")
    assert transformer_config_kwargs(None) == {}
    tcfg = transformer_config(tiny_cfg(), tp=1, pp=1, dtype=torch.bfloat16, fp8=FP8Config("tensorwise"))
    assert (tcfg.fp8, tcfg.fp8_recipe) == ("hybrid", "tensorwise")
    assert transformer_config(tiny_cfg(), tp=1, pp=1, dtype=torch.bfloat16).fp8 is None


def test_pipeline_p2p_is_unbatched():
    """megatron issues 750/1450: never the batched p2p path (wrong numbers under interleaved PP)."""
    from gadx.models.gpt import transformer_config

    tcfg = transformer_config(tiny_cfg(), tp=1, pp=2, dtype=torch.float32)
    assert tcfg.batch_p2p_comm is False and tcfg.overlap_p2p_comm is False
    assert tcfg.virtual_pipeline_model_parallel_size is None


def _losses(fp8):
    from gadx.parallel import init_parallel

    dims = init_parallel(1, 1)
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), dtype=torch.bfloat16, use_te=True, fp8=fp8, parallel=dims, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids_BT = torch.randint(0, 1024, (8, 128), generator=g).to(dims.device)
    losses = []
    for _ in range(FP8_STEPS):
        logits_BTV = model.logits(ids_BT[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits_BTV.reshape(-1, 1024), ids_BT[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses).cpu()


@pytest.mark.gpu
def test_fp8_losses_match_bf16_on_gpu():
    pytest.importorskip("transformer_engine")
    bf16 = _losses(None)
    fp8 = _losses("tensorwise")
    assert bf16[-1] < bf16[0] - 0.5  # the run learns, so the comparison means something
    diff = (fp8 - bf16).abs()
    assert diff.max() < FP8_LOSS_ATOL, f"fp8 vs bf16 losses differ by up to {diff.max():.3f}: {fp8} vs {bf16}"
