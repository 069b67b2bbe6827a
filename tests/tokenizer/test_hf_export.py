"""gadx.tokenizer.save_hf_tokenizer: transformers' AutoTokenizer loads the folder and encodes
exactly as gadx does, for the sentencepiece tokenizers gadx trains (converted to tokenizer.json)
and for tokenizer.json ones, even next to a qwen2 config.json (which alone makes AutoTokenizer
pick Qwen2Tokenizer, which ignores a custom tokenizer.json: pitfalls.md)."""
import json
import warnings

import pytest

from gadx.tokenizer import load_tokenizer, save_hf_tokenizer, train_sentencepiece
from gadx.world import World


def _texts(world):
    return ([ex.prompt for ex in world.split("test_ood")[:40]]
            + ["  two  spaces\n\nand a tab\t", "digits 1234567890", "café 東京 😀", "<|eot_id|>inline<|eot_id|>"])


def _chat_ids(hf, msgs):
    out = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


@pytest.mark.parametrize("template", ["llama3", "chatml"])
def test_autotokenizer_encodes_like_gadx(tmp_path, world, template):
    transformers = pytest.importorskip("transformers")
    tok = train_sentencepiece(world.corpus(), tmp_path / "sp", 400, chat_template=template)
    out = tmp_path / "hf"
    out.mkdir()
    # a qwen2 model folder: without tokenizer_class AutoTokenizer would pick Qwen2Tokenizer
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    save_hf_tokenizer(tok, out)
    assert not (out / "tokenizer.model").exists()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    if transformers.__version__ >= "5":  # it forces Qwen2Tokenizer on qwen2 folders unless auto_map says
        assert config["auto_map"] == {"AutoTokenizer": [None, "PreTrainedTokenizerFast"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoTokenizer.from_pretrained(str(out))
    for text in _texts(world):
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text), text
    msgs = [{"role": "user", "content": world.split("train")[0].prompt}]
    assert _chat_ids(hf, msgs) == tok.encode_chat(msgs)
    assert hf.convert_tokens_to_ids(tok.special_tokens["eos_token"]) == tok.eos_id
    # gadx reads the exported folder (tokenizer.json now) the same way too
    again = load_tokenizer(out)
    assert [again.encode(t) for t in _texts(world)] == [tok.encode(t) for t in _texts(world)]
    assert again.encode_chat(msgs) == tok.encode_chat(msgs) and again.eos_id == tok.eos_id


def test_tokenizer_json_roundtrip(tmp_path, world):
    """A tokenizer.json tokenizer (the HF backend) exports as itself, with the fast class forced."""
    transformers = pytest.importorskip("transformers")
    first = tmp_path / "first"
    save_hf_tokenizer(train_sentencepiece(world.corpus(), tmp_path / "sp", 400, chat_template="chatml"), first)
    cfg = json.loads((first / "tokenizer_config.json").read_text())
    (first / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "Qwen2Tokenizer"}))
    tok = load_tokenizer(first)
    save_hf_tokenizer(tok, tmp_path / "second")
    assert json.loads((tmp_path / "second" / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "second"))
    for text in _texts(world):
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text), text


def test_refuses_bpe(tmp_path, world):
    tok = train_sentencepiece(world.corpus(), tmp_path / "sp", 400, model_type="bpe")
    with pytest.raises(ValueError, match="unigram"):
        save_hf_tokenizer(tok, tmp_path / "hf")
