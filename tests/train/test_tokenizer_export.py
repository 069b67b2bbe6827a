"""The student_hf tokenizer export (gadx.tokenizer.save_hf_tokenizer) encodes as gadx does
under transformers: on the embedded world's sentencepiece tokenizer (llama3 template) and on a
SmolLM2-style byte-level BPE tokenizer with SmolLM2's chat template, both built locally."""
import json

import pytest

transformers = pytest.importorskip("transformers")

from gadx.tokenizer import save_hf_tokenizer, load_tokenizer  # noqa: E402

# SmolLM2-Instruct's template shape: ChatML with a default system turn
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATS = [
    [{"role": "user", "content": "What is the capital of Vorland? Answer with 12 words."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  two  spaces\tand a tab\n\nthen 3.14159"},
     {"role": "assistant", "content": "Sure: déjà vu, naïve \U0001F600."}, {"role": "user", "content": "Why?"}],
]


def _hf_ids(folder, chat, cls=None):
    hf = (cls or transformers.AutoTokenizer).from_pretrained(str(folder))
    ids = hf.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"]), hf


def _smol_tokenizer(tmp_path, world_text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(world_text, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    src = tmp_path / "smol_src"
    src.mkdir()
    tok.save(str(src / "tokenizer.json"))
    # SmolLM2's own config names a slow class; no tokenizer_class would be as bad
    (src / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "chat_template": SMOL_TEMPLATE}))
    return load_tokenizer(src)


def _world_text():
    from gadx.world import World

    return World(seed=0).corpus()[:2000]


def test_smollm2_style_export_encodes_like_gadx(tmp_path):
    tok = _smol_tokenizer(tmp_path, _world_text())
    out = save_hf_tokenizer(tok, tmp_path / "student_hf")
    (out / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    for chat in CHATS:
        ids, hf = _hf_ids(out, chat)
        assert ids == tok.encode_chat(chat), type(hf).__name__
        assert hf.decode(ids) == tok.decode(ids, skip_special_tokens=False)


def test_embedded_world_sentencepiece_export_encodes_like_gadx(tmp_path, world_tok):
    tok = load_tokenizer(world_tok)
    out = save_hf_tokenizer(tok, tmp_path / "student_hf")
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    for chat in CHATS:
        want = tok.encode_chat(chat)
        ids, hf = _hf_ids(out, chat)  # the tokenizer files alone
        assert ids == want, type(hf).__name__
        assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids)
        assert load_tokenizer(out).encode_chat(chat) == want  # gadx reads its own export back the same
    # the student's folder also holds config.json (model_type qwen2), for which transformers 5 forces
    # Qwen2Tokenizer unless steered: the export must still load as the same tokenizer
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    save_hf_tokenizer(tok, out)
    for chat in CHATS:
        assert _hf_ids(out, chat)[0] == tok.encode_chat(chat)
        assert _hf_ids(out, chat, transformers.PreTrainedTokenizerFast)[0] == tok.encode_chat(chat)
