"""Train a small sentencepiece tokenizer with chat special tokens (for tiny models and the embedded default).

    tok = train_sentencepiece(World().corpus(), "out/tokenizer", vocab_size=640)

Writes ``tokenizer.model`` plus ``tokenizer_config.json`` (chat template and
special tokens). Deterministic: no input sampling or shuffling, one thread.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable

from gadx.tokenizer import chat
from gadx.tokenizer.tokenizer import Tokenizer, load_tokenizer

# Pieces 0.. of the trained vocabulary, per template: (pieces, special token roles).
_SPECIALS = {
    "chatml": (["<pad>", *chat.CHATML_TOKENS],
               {"eos_token": "<|im_end|>", "pad_token": "<pad>"}),
    "llama3": (["<pad>", *chat.LLAMA3_TOKENS],
               {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<pad>"}),
}


def train_sentencepiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int, *,
                        chat_template: str = "chatml", model_type: str = "unigram") -> Tokenizer:
    """Train on ``texts`` and save to ``out_dir``; returns the loaded :class:`Tokenizer`.

    Byte fallback is on, so any text encodes. ``vocab_size`` must leave room for the
    256 byte pieces and the special tokens; sentencepiece refuses sizes the corpus cannot fill.
    """
    import sentencepiece as spm

    if chat_template not in _SPECIALS:
        raise ValueError(f"chat_template must be one of {sorted(_SPECIALS)}, got {chat_template!r}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no training text (all inputs empty)")
    pieces, roles = _SPECIALS[chat_template]
    floor = 256 + len(pieces) + 2
    if vocab_size < floor:
        raise ValueError(f"vocab_size {vocab_size} too small: byte fallback and special tokens need > {floor}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, byte_fallback=True, unk_id=len(pieces), bos_id=-1, eos_id=-1, pad_id=-1,
            user_defined_symbols=pieces, input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
            split_digits=True, max_sentence_length=1 << 16, minloglevel=2,
            # Chat templates rely on exact newlines and spacing: no NFKC, no whitespace folding, no dummy prefix.
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        )
    except RuntimeError as e:
        raise ValueError(f"sentencepiece training failed for vocab_size={vocab_size}: {e}") from None
    (out / "tokenizer.model").write_bytes(model.getvalue())
    config = {"additional_special_tokens": list(pieces), **roles, "chat_template": chat.BUILTIN[chat_template]}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(roles, indent=2))
    return load_tokenizer(out)
