"""Export a gadx tokenizer as a Hugging Face folder that transformers' ``AutoTokenizer`` loads
as the same tokenizer: the same ids for every text gadx encodes.

    export_hf_tokenizer(tok, "runs/x/gad/student_hf")     # tokenizer.json + tokenizer_config.json

A folder with only a sentencepiece ``tokenizer.model`` and no ``tokenizer_class`` is read by
``AutoTokenizer`` through the model's ``config.json`` type (Qwen2 -> a byte-level BPE that
ignores the .model file): another tokenizer, other ids (55 where gadx encodes 57 on a llama3-
templated chat turn of the embedded world). So the export always writes a ``tokenizer.json``
(the file tokenizers and transformers' fast path read) with ``tokenizer_class`` =
``PreTrainedTokenizerFast``. A sentencepiece model is rebuilt as a tokenizers Unigram with its
own scores, normalizer (precompiled charsmap or none), whitespace escaping, dummy prefix
(only at the very start, as sentencepiece does, not after each special token) and byte
fallback; its user-defined and control pieces become added tokens. The export re-encodes
probe texts with both and raises ValueError on any difference (unsupported sentencepiece
options: BPE models, remove_extra_whitespaces, whitespace as suffix).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from gadx.tokenizer.tokenizer import SPECIAL_KEYS, Tokenizer, _HFBackend, _SPBackend

PROBES = (
    "Hello, world!  Two  spaces, a tab\tand\nnewlines\n\n",
    " leading space and trailing ",
    "digits 1234567890 and 3.14; emoji \U0001F600 and accents: déjà vu, naïve, Ærø",
    "日本語のテキスト and 한국어",
)


# ---- sentencepiece's ModelProto, read without protobuf (not a gadx dependency) ---------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes):
    """(field number, value) pairs of one protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def read_sentencepiece(path: Path) -> dict[str, Any]:
    """Pieces (piece, score, type) and the options that change how text is split."""
    pieces, trainer, norm = [], {}, {}
    for number, value in _fields(Path(path).read_bytes()):
        if number == 1:
            p = {"piece": "", "score": 0.0, "type": 1}
            for n, v in _fields(value):
                if n == 1:
                    p["piece"] = v.decode("utf-8")
                elif n == 2:
                    p["score"] = struct.unpack("<f", v)[0]
                elif n == 3:
                    p["type"] = v
            pieces.append(p)
        elif number == 2:
            trainer = dict(_fields(value))
        elif number == 3:
            norm = dict(_fields(value))
    return {
        "pieces": pieces,
        "model_type": trainer.get(3, 1),  # 1 unigram, 2 bpe, 3 word, 4 char
        "byte_fallback": bool(trainer.get(35, 0)),
        "whitespace_suffix": bool(trainer.get(24, 0)),
        "charsmap": norm.get(2, b""),
        "add_dummy_prefix": bool(norm.get(3, 1)),
        "remove_extra_whitespaces": bool(norm.get(4, 1)),
        "escape_whitespaces": bool(norm.get(5, 1)),
    }


_NORMAL, _UNKNOWN, _CONTROL, _USER, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_to_tokenizers(path: Path, special: set[str]):
    """A ``tokenizers.Tokenizer`` that splits text as the sentencepiece model at ``path`` does."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    sp = read_sentencepiece(path)
    unsupported = [name for name, bad in (("a non-unigram model", sp["model_type"] != 1),
                                          ("remove_extra_whitespaces", sp["remove_extra_whitespaces"]),
                                          ("treat_whitespace_as_suffix", sp["whitespace_suffix"])) if bad]
    if unsupported:
        raise ValueError(f"{path}: cannot export this sentencepiece model as tokenizer.json ({', '.join(unsupported)})")
    pieces = sp["pieces"]
    unk = next((i for i, p in enumerate(pieces) if p["type"] == _UNKNOWN), None)
    tok = HFTokenizer(models.Unigram([(p["piece"], p["score"]) for p in pieces], unk_id=unk,
                                     byte_fallback=sp["byte_fallback"]))
    if sp["charsmap"]:
        tok.normalizer = normalizers.Precompiled(sp["charsmap"])
    # sentencepiece adds the dummy "▁" once, before the whole text; "first" does the same, where
    # "always" would add one after every special token (the legacy Llama tokenizer's extra ids)
    scheme = "first" if sp["add_dummy_prefix"] else "never"
    if sp["escape_whitespaces"]:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
    elif sp["add_dummy_prefix"]:
        raise ValueError(f"{path}: cannot export a dummy prefix without whitespace escaping")
    steps = [decoders.ByteFallback(), decoders.Fuse()]
    if sp["escape_whitespaces"]:
        steps.append(decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False))
    tok.decoder = decoders.Sequence(steps)
    # user-defined pieces are matched whole before segmentation, like added tokens
    added = [AddedToken(p["piece"], special=p["type"] == _CONTROL or p["piece"] in special, normalized=False)
             for p in pieces if p["type"] in (_CONTROL, _USER) or p["piece"] in special]
    tok.add_tokens(added)
    for i, p in enumerate(pieces):
        if p["type"] in (_CONTROL, _USER) or p["piece"] in special:
            assert tok.token_to_id(p["piece"]) == i, (p["piece"], i)
    return tok


def export_hf_tokenizer(tok: Tokenizer, folder: str | Path) -> Path:
    """Write ``tok`` to ``folder`` as tokenizer.json + tokenizer_config.json (+ special_tokens_map.json)
    so that ``AutoTokenizer.from_pretrained(folder)`` encodes every text as ``tok`` does; a
    sentencepiece tokenizer also keeps its tokenizer.model. The one function for every gadx
    export (training's student_hf, ``gadx export``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backend = tok._backend
    if isinstance(backend, _SPBackend):
        fast = sentencepiece_to_tokenizers(backend.path, set(tok.special_tokens.values()) | set(backend.special_ids))
        backend.save(folder)  # tokenizer.model too, for sentencepiece users
        _check_same(tok, fast)
        fast.save(str(folder / "tokenizer.json"))
    else:
        assert isinstance(backend, _HFBackend), type(backend)
        backend.save(folder)
    config = {k: v for k, v in tok.config.items() if k not in SPECIAL_KEYS and k != "chat_template"}
    # a class transformers maps straight to tokenizer.json; a checkpoint's own class (e.g.
    # LlamaTokenizer) may rebuild the tokenizer from other files with other options
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("auto_map", None)
    config |= tok.special_tokens
    config["chat_template"] = tok.chat_template
    specials = sorted(set(tok.special_ids) - set(tok.special_tokens.values()))
    if specials:
        config["additional_special_tokens"] = specials
    config.setdefault("clean_up_tokenization_spaces", False)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(json.dumps(tok.special_tokens, indent=2, ensure_ascii=False))
    return folder


def _check_same(tok: Tokenizer, fast) -> None:
    texts = list(PROBES)
    texts.append(tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "What is 12 + 30?"},
                                          {"role": "assistant", "content": "42."},
                                          {"role": "user", "content": " Why?\n"}], add_generation_prompt=True))
    for text in texts:
        want, got = tok.encode(text), fast.encode(text, add_special_tokens=False).ids
        if want != got:
            raise ValueError(f"{tok.source}: the exported tokenizer.json encodes {text[:40]!r} as {got[:12]}..., "
                             f"gadx as {want[:12]}...; not exported")
