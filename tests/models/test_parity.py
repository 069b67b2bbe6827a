"""gadx (megatron GPTModel) vs transformers on tiny random Llama / Qwen2 checkpoints, fp32."""
import json

import pytest
import torch

from tiny_models import PARITY, save_parity_hf

RTOL = 1e-4  # relative to the largest |logit|


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("shape", sorted(PARITY))
def test_logits_match_transformers(shape, tmp_path):
    from gadx.models import from_pretrained

    hf = save_parity_hf(shape, tmp_path)
    model = from_pretrained(tmp_path)
    ids_BT = torch.randint(0, model.config.vocab_size, (3, 40))
    with torch.no_grad():
        ref = hf(ids_BT).logits
        out = model.logits(ids_BT)
    assert out.shape == ref.shape == (3, 40, model.config.vocab_size)
    assert rel_err(out, ref) < RTOL


def test_parity_check_detects_a_wrong_rope_theta(tmp_path):
    # the parity test must be able to fail: same weights, rope_theta off by 10x
    from gadx.models import from_pretrained

    hf = save_parity_hf("qwen2-gqa-untied-v517-1e6", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rope_parameters"]["rope_theta"] = 1e5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ids_BT = torch.randint(0, 517, (2, 40))
    with torch.no_grad():
        assert rel_err(from_pretrained(tmp_path).logits(ids_BT), hf(ids_BT).logits) > 1e-2


@pytest.mark.parametrize("shape", ["qwen2-gqa-untied-v517-1e6", "llama-gqa-tied-v517-1e4"])
def test_save_round_trip_loads_in_transformers(shape, tmp_path):
    from transformers import AutoModelForCausalLM

    from gadx.models import from_pretrained, hf_state_dict, save_pretrained

    src, out = tmp_path / "src", tmp_path / "out"
    hf = save_parity_hf(shape, src)
    (src / "tokenizer_config.json").write_text("{}")
    model = from_pretrained(src)
    with torch.no_grad():  # change the weights so the test sees what gadx wrote, not a copy
        model.gpt.decoder.final_layernorm.weight.mul_(1.5)
    save_pretrained(model, out)
    assert (out / "tokenizer_config.json").is_file()
    assert not any(p.suffix in (".bin", ".pt") for p in out.iterdir())
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    sd = hf_state_dict(model)
    for name, t in reloaded.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            name = "model.embed_tokens.weight"
        assert torch.equal(t, sd[name]), name
    ids_BT = torch.randint(0, model.config.vocab_size, (2, 17))
    with torch.no_grad():
        assert rel_err(model.logits(ids_BT), reloaded(ids_BT).logits) < RTOL
        assert rel_err(model.logits(ids_BT), hf(ids_BT).logits) > 1e-3


def test_sharded_save_and_load(tmp_path):
    from gadx.models import from_pretrained, save_pretrained

    hf = save_parity_hf("llama-mha-untied-v301-1e6", tmp_path / "src")
    model = from_pretrained(tmp_path / "src")
    save_pretrained(model, tmp_path / "out", max_shard_bytes=50_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    ids_BT = torch.randint(0, 301, (2, 9))
    with torch.no_grad():
        assert rel_err(from_pretrained(tmp_path / "out").logits(ids_BT), hf(ids_BT).logits) < RTOL


def test_hf_state_dict_is_views_at_tp1(tmp_path):
    from gadx.models import from_pretrained, hf_state_dict

    save_parity_hf("qwen2-mha-tied-v300-1e4", tmp_path)
    model = from_pretrained(tmp_path)
    sd = hf_state_dict(model)
    layer = model.gpt.decoder.layers[0]
    shares = lambda t, p: t.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
    assert shares(sd["model.embed_tokens.weight"], model.gpt.embedding.word_embeddings.weight)
    assert shares(sd["model.layers.0.mlp.up_proj.weight"], layer.mlp.linear_fc1.weight)
    assert shares(sd["model.layers.0.self_attn.o_proj.weight"], layer.self_attention.linear_proj.weight)
    assert "lm_head.weight" not in sd
