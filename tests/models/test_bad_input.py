"""Bad checkpoints and layouts fail with a ValueError naming the file and the value."""
import json

import pytest
import torch

from tiny_models import save_parity_hf


@pytest.fixture
def ckpt(tmp_path):
    save_parity_hf("llama-gqa-tied-v517-1e4", tmp_path)
    return tmp_path


def test_missing_config(ckpt):
    from gadx.models import from_pretrained

    (ckpt / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json not found"):
        from_pretrained(ckpt)


def test_malformed_config(ckpt):
    from gadx.models import from_pretrained

    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: malformed JSON"):
        from_pretrained(ckpt)


def test_unknown_architecture(ckpt):
    from gadx.models import from_pretrained

    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["MistralForCausalLM"], "mistral"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: unsupported architecture.*MistralForCausalLM"):
        from_pretrained(ckpt)


def test_shape_mismatch(ckpt):
    from gadx.models import from_pretrained

    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\), config.json implies \(128, 64\)"):
        from_pretrained(ckpt)


def test_missing_tensor(ckpt):
    from safetensors.torch import load_file, save_file

    from gadx.models import from_pretrained

    sd = load_file(ckpt / "model.safetensors")
    del sd["model.norm.weight"]
    save_file(sd, ckpt / "model.safetensors")
    with pytest.raises(ValueError, match="'model.norm.weight' is missing"):
        from_pretrained(ckpt)


def test_pickled_checkpoint_refused(ckpt):
    from gadx.models import from_pretrained

    from safetensors.torch import load_file

    torch.save(load_file(ckpt / "model.safetensors"), ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pickled weights \['pytorch_model.bin'\]"):
        from_pretrained(ckpt)
    with pytest.raises(ValueError, match="pytorch_model.bin: pickled checkpoint"):
        from_pretrained(ckpt / "pytorch_model.bin")


def test_tp_not_dividing_heads(ckpt):
    from gadx.models import from_pretrained
    from gadx.parallel import ParallelDims

    fake = ParallelDims(tp=3, pp=1, dp=1, rank=0, world=3, tp_rank=0, pp_rank=0, dp_rank=0,
                        device=torch.device("cpu"), tp_group=None, pp_group=None, dp_group=None)
    with pytest.raises(ValueError, match=r"config.json: tensor parallel size 3 does not divide num_heads=4"):
        from_pretrained(ckpt, parallel=fake)


def test_te_requested_without_te(ckpt):
    from gadx.models import from_pretrained
    from gadx.models.spec import te_available

    if te_available():
        pytest.skip("transformer_engine is installed")
    with pytest.raises(ValueError, match="transformer_engine is not importable"):
        from_pretrained(ckpt, use_te=True)


def test_bad_head(ckpt):
    from gadx.models import from_pretrained

    with pytest.raises(ValueError, match="head must be one of"):
        from_pretrained(ckpt, head="value")
