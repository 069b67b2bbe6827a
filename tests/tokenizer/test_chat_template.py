"""Chat rendering and ids against transformers on locally built tokenizer.json files.

Compared with PreTrainedTokenizerFast: AutoTokenizer on a Qwen2 folder would pick
Qwen2Tokenizer and silently ignore a custom tokenizer.json.
"""
import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gadx.tokenizer import BUILTIN_TEMPLATES, load_tokenizer
from gadx.tokenizer.chat import CHATML_TOKENS, LLAMA3_TOKENS

CORPUS = ["The quick brown fox jumps over the lazy dog.", "What is the capital of France? Paris, of course.",
          "Name three colours: red, green and blue.", "You are a helpful assistant.\nBe brief."] * 20

# A template exercising transformers' extras: raise_exception, tojson, namespace, loop controls,
# {% generation %}, and the special-token variables.
EXTRAS = (
    "{% set ns = namespace(n=0) %}{% for m in messages %}"
    "{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}"
    "{% if m.role == 'system' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}"
    "  {{ ns.n }}:{{ m.role }} {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
    "{% else %}{{ m.content | tojson }}{% endif %}\n"
    "{% endfor %}{{ eos_token }}{% if add_generation_prompt %}>>{% endif %}"
)

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "You are a fox."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "  Hello there. "}, {"role": "user", "content": "Jump \"over\" the dog?"}],
    [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two", "tool_calls": None},
     {"role": "user", "content": "three"}],
]


def build_folder(tmp_path, name, specials, config):
    tok = HFTokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=list(specials),
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path / name
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              **config}))
    return folder


@pytest.fixture(params=["qwen", "llama3", "extras"])
def folder(request, tmp_path):
    if request.param == "qwen":
        return build_folder(tmp_path, "qwen", CHATML_TOKENS, {
            "chat_template": BUILTIN_TEMPLATES["chatml"], "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    if request.param == "llama3":
        return build_folder(tmp_path, "llama3", LLAMA3_TOKENS, {
            "chat_template": BUILTIN_TEMPLATES["llama3"], "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>"})
    return build_folder(tmp_path, "extras", ["<s>", "</s>"], {"chat_template": EXTRAS, "eos_token": "</s>",
                                                              "bos_token": "<s>"})


@pytest.mark.parametrize("chat", CHATS)
@pytest.mark.parametrize("gen", [True, False])
def test_render_and_ids_match_transformers(folder, chat, gen):
    ref = PreTrainedTokenizerFast.from_pretrained(folder)
    ours = load_tokenizer(folder)
    want = ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False)
    assert ours.apply_chat_template(chat, add_generation_prompt=gen) == want
    want_ids = ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True, return_dict=False)
    assert ours.encode_chat(chat, add_generation_prompt=gen) == want_ids
    assert want_ids == ref(want, add_special_tokens=False)["input_ids"]
    # Special tokens in the text are single ids, not spelled out.
    assert ours.eos_id is not None and (ours.eos_id in want_ids or "{{ eos_token }}" not in ours.chat_template)


def test_ids_and_special_tokens(folder):
    ref = PreTrainedTokenizerFast.from_pretrained(folder)
    ours = load_tokenizer(folder)
    text = "Name three colours: red, green and blue."
    assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"]
    assert ours.decode(ours.encode(text)) == text
    assert ours.vocab_size == len(ref)
    assert (ours.eos_id, ours.bos_id, ours.pad_id) == (ref.eos_token_id, ref.bos_token_id, ref.pad_token_id)


def test_default_system_prompt_and_raise_exception(tmp_path):
    qwen = load_tokenizer(build_folder(tmp_path, "q", CHATML_TOKENS, {
        "chat_template": BUILTIN_TEMPLATES["chatml"], "eos_token": "<|im_end|>"}))
    text = qwen.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    extras = load_tokenizer(build_folder(tmp_path, "e", ["</s>"], {"chat_template": EXTRAS, "eos_token": "</s>"}))
    with pytest.raises(Exception, match="bad role tool"):
        extras.apply_chat_template([{"role": "tool", "content": "x"}])


def test_builtin_picked_by_vocabulary_and_file_template(tmp_path):
    llama = build_folder(tmp_path, "l", LLAMA3_TOKENS, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    assert load_tokenizer(llama).chat_template == BUILTIN_TEMPLATES["llama3"]
    qwen = build_folder(tmp_path, "q", CHATML_TOKENS, {"eos_token": "<|im_end|>"})
    assert load_tokenizer(qwen).chat_template == BUILTIN_TEMPLATES["chatml"]
    (qwen / "chat_template.jinja").write_text(EXTRAS)
    assert load_tokenizer(qwen).chat_template == EXTRAS
    assert load_tokenizer(qwen, chat_template="llama3").chat_template == BUILTIN_TEMPLATES["llama3"]


def test_save_round_trip(folder, tmp_path):
    ours = load_tokenizer(folder)
    again = load_tokenizer(ours.save(tmp_path / "saved"))
    chat = CHATS[2]
    assert again.encode_chat(chat) == ours.encode_chat(chat)
    assert again.chat_template == ours.chat_template and again.special_tokens == ours.special_tokens
    ref = PreTrainedTokenizerFast.from_pretrained(tmp_path / "saved")
    assert ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        again.apply_chat_template(chat)
