"""Training and loading sentencepiece tokenizers; bad input."""
import json

import pytest

from gadx.tokenizer import BUILTIN_TEMPLATES, check_vocab, load_tokenizer, train_sentencepiece
from gadx.tokenizer.cli import main as cli_main

WORDS = ("apple banana cherry grape lemon mango melon orange peach pear plum quince river mountain forest desert "
         "ocean island valley canyon meadow harbour violin guitar trumpet drum flute piano cello harp").split()
TEXTS = [f"Give me {n} {WORDS[n % len(WORDS)]}s. Do not include {WORDS[(7 * n) % len(WORDS)]} number {n}."
         for n in range(120)] + ["The cat sat on the mat.", "Answer in one sentence: red, green, blue."] * 30
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Give me 3 fruits."},
        {"role": "assistant", "content": "Pear, plum, fig."}, {"role": "user", "content": "Now ünïcode ✓?"}]


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_train_load_chat(tmp_path, template):
    tok = train_sentencepiece(TEXTS, tmp_path / "tok", 340, chat_template=template)
    assert tok.vocab_size == 340 and tok.chat_template == BUILTIN_TEMPLATES[template]
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == BUILTIN_TEMPLATES[template]
    eos = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}[template]
    assert config["eos_token"] == eos and tok.eos_id == tok.token_to_id(eos) and tok.pad_id == 0
    text = tok.apply_chat_template(CHAT)
    ids = tok.encode_chat(CHAT)
    assert tok.decode(ids, skip_special_tokens=False) == text  # byte fallback: exact, newlines included
    assert ids.count(tok.eos_id) == 4  # each turn ends in one special id, not a spelled-out string
    plain = tok.decode(ids)
    assert "Be brief." in plain and eos not in plain
    for t in TEXTS[:5] + ["Now ünïcode ✓?"]:
        assert tok.decode(tok.encode(t)) == t


def test_training_is_deterministic(tmp_path):
    a = train_sentencepiece(TEXTS, tmp_path / "a", 340)
    b = train_sentencepiece(TEXTS, tmp_path / "b", 340)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (tmp_path / "b" / "tokenizer.model").read_bytes()
    assert a.encode(TEXTS[3]) == b.encode(TEXTS[3])


def test_save_and_load_model_file(tmp_path):
    tok = train_sentencepiece(TEXTS, tmp_path / "a", 340)
    again = load_tokenizer(tok.save(tmp_path / "b"))
    assert again.encode_chat(CHAT) == tok.encode_chat(CHAT)
    assert load_tokenizer(tmp_path / "a" / "tokenizer.model").encode_chat(CHAT) == tok.encode_chat(CHAT)


def test_cli_trains_from_files(tmp_path, capsys):
    data = tmp_path / "data.txt"
    data.write_text("\n".join(TEXTS))
    assert cli_main(["--out", str(tmp_path / "t"), "--vocab-size", "340", str(data)]) == 0
    assert load_tokenizer(tmp_path / "t").vocab_size == 340
    assert cli_main(["--out", str(tmp_path / "u"), str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: training text file not found" in capsys.readouterr().err


def test_bad_input(tmp_path):
    tok = train_sentencepiece(TEXTS, tmp_path / "tok", 340)
    check_vocab(tok, 340)
    check_vocab(tok, 384)  # a padded model vocabulary is fine
    with pytest.raises(ValueError, match=r"tokenizer.model: tokenizer vocab_size 340 exceeds the model's vocab_size 256"):
        check_vocab(tok, 256)
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no tokenizer.json or sentencepiece"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "empty" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(ValueError, match=r"eos_token '<\|nope\|>' is not in the vocabulary"):
        load_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="malformed JSON"):
        load_tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="vocab_size 100 too small"):
        train_sentencepiece(TEXTS, tmp_path / "x", 100)
    with pytest.raises(ValueError, match="chat_template"):
        train_sentencepiece(TEXTS, tmp_path / "x", 340, chat_template="nope")
    with pytest.raises(ValueError, match="sentencepiece training failed for vocab_size=5000"):
        train_sentencepiece(TEXTS, tmp_path / "x", 5000)
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
