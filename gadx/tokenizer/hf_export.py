"""A gadx tokenizer as a folder that transformers' AutoTokenizer loads and encodes exactly as gadx does.

    save_hf_tokenizer(tok, "out/")    # tokenizer.json + tokenizer_config.json + special_tokens_map.json
    AutoTokenizer.from_pretrained("out/").encode(text, add_special_tokens=False) == tok.encode(text)

Two traps this avoids (docs/design/pitfalls.md): AutoTokenizer picks its class from the folder's
config.json model type (a qwen2 student -> Qwen2Tokenizer, which ignores a custom
tokenizer.json's model and pipeline, without an error), and it cannot read gadx's
sentencepiece ``tokenizer.model`` as a fast tokenizer. So the folder always gets a
``tokenizer.json`` and ``tokenizer_class: PreTrainedTokenizerFast``, which encodes with that
file and nothing else; where transformers overrides that class (qwen2 in transformers 5),
an ``auto_map`` entry too, added only after loading the folder showed it is needed. A sentencepiece unigram model is converted to an equivalent
``tokenizers`` Unigram model (same pieces, scores and ids; user-defined pieces as added tokens,
matched in the raw text as sentencepiece does; byte fallback), and the conversion is checked
against sentencepiece on probe texts before anything is written: a model it cannot reproduce
(BPE, unusual normalisation) raises ValueError instead of exporting a tokenizer that drifts.

One known difference, as in every sentencepiece -> tokenizer.json conversion (transformers'
own included): the text of a piece sentencepiece never matches in input (``<unk>``, control
pieces such as ``<s>``) is read by sentencepiece as ordinary characters, but by a
``tokenizers`` Unigram model, whose vocabulary is one trie, as that piece. gadx's own
tokenizers have ``<unk>`` only; a prompt containing the literal text ``<unk>`` encodes
differently. The probes leave those strings out.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from gadx.tokenizer.tokenizer import SPECIAL_KEYS, Tokenizer, _HFBackend, _SPBackend

# sentencepiece ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
NEVER = -1e9  # score of pieces sentencepiece never matches in text (control, unused, unknown)
UNMATCHED = (CONTROL, UNUSED, UNKNOWN)


def save_hf_tokenizer(tok: Tokenizer, folder: str | Path, *, verify: bool = True) -> Path:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` (class, special tokens, chat template)
    and ``special_tokens_map.json`` into ``folder`` (after the model's config.json, if any). The
    one tokenizer export of gadx: the trainer's student_hf folders and ``gadx export`` both go
    through it. ``verify``: load the folder with the installed transformers' AutoTokenizer (if
    any) and check it encodes the probes as gadx does (see ``_steer_autotokenizer``)."""
    folder = Path(folder)
    if isinstance(tok._backend, _HFBackend):
        hf = tok._backend.tok
    elif isinstance(tok._backend, _SPBackend):
        hf = sentencepiece_to_tokenizers(tok)
    else:
        raise ValueError(f"cannot export a tokenizer with backend {type(tok._backend).__name__}")
    _check_same(tok, hf)
    folder.mkdir(parents=True, exist_ok=True)
    hf.save(str(folder / "tokenizer.json"))
    stale = folder / "tokenizer.model"  # a copied sentencepiece file would be a second, unused source
    if stale.is_file():
        stale.unlink()
    config = {k: v for k, v in tok.config.items()
              if k not in SPECIAL_KEYS and k not in ("chat_template", "tokenizer_class", "auto_map")}
    config |= {"tokenizer_class": "PreTrainedTokenizerFast", **tok.special_tokens, "chat_template": tok.chat_template}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(json.dumps(tok.special_tokens, indent=2, ensure_ascii=False))
    if verify:
        _steer_autotokenizer(tok, folder, config)
    return folder


def _autotokenizer_differs(tok: Tokenizer, folder: Path) -> str | None:
    import warnings

    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoTokenizer.from_pretrained(str(folder))
    for text in _probes(tok):
        if hf.encode(text, add_special_tokens=False) != tok.encode(text):
            return f"{type(hf).__name__} encodes {text[:60]!r} differently"
    return None


def _steer_autotokenizer(tok: Tokenizer, folder: Path, config: dict[str, Any]) -> None:
    """transformers 5 ignores ``tokenizer_class`` for some model types: for ``qwen2`` (its
    MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS) AutoTokenizer always builds Qwen2Tokenizer, a
    byte-level BPE that takes only the vocabulary from tokenizer.json (a gadx unigram tokenizer
    then encodes letter by letter). An ``auto_map`` entry naming PreTrainedTokenizerFast skips
    that override (with the default trust_remote_code=False). So: load, compare, and add the
    entry only when the plain folder does not reproduce gadx's ids; raise if nothing does."""
    try:
        import transformers  # noqa: F401 - optional (the dev / real extras)
    except ImportError:
        return
    why = _autotokenizer_differs(tok, folder)
    if why is None:
        return
    config["auto_map"] = {"AutoTokenizer": [None, "PreTrainedTokenizerFast"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    still = _autotokenizer_differs(tok, folder)
    if still is not None:
        raise ValueError(f"{folder}: transformers' AutoTokenizer does not reproduce gadx's ids ({why}; with "
                         f"auto_map: {still}); load the folder with PreTrainedTokenizerFast.from_pretrained")


# ---- sentencepiece -> tokenizers ----------------------------------------------------------------


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message: enough of the wire format to
    read a sentencepiece model without depending on protobuf."""
    i = 0

    def varint() -> int:
        nonlocal i
        out, shift = 0, 0
        while True:
            b = buf[i]
            i += 1
            out |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return out

    while i < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            yield num, wire, varint()
        elif wire == 1:
            yield num, wire, buf[i : i + 8]
            i += 8
        elif wire == 2:
            n = varint()
            yield num, wire, buf[i : i + n]
            i += n
        elif wire == 5:
            yield num, wire, buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"sentencepiece model: unsupported protobuf wire type {wire}")


def read_sentencepiece(path: str | Path) -> dict[str, Any]:
    """Pieces (text, score, type), model type, byte fallback and normaliser settings of a .model file."""
    pieces, trainer, norm = [], {}, {}
    for num, _, val in _fields(Path(path).read_bytes()):
        if num == 1:  # repeated SentencePiece
            piece, score, typ = "", 0.0, NORMAL
            for n, _, v in _fields(val):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    typ = v
            pieces.append((piece, score, typ))
        elif num == 2:  # TrainerSpec
            trainer = {n: v for n, _, v in _fields(val)}
        elif num == 3:  # NormalizerSpec
            norm = {n: v for n, _, v in _fields(val)}
    return {
        "pieces": pieces,
        "model_type": {1: "unigram", 2: "bpe", 3: "word", 4: "char"}.get(trainer.get(3, 1), "?"),
        "byte_fallback": bool(trainer.get(35, 0)),
        "treat_whitespace_as_suffix": bool(trainer.get(24, 0)),
        "norm_name": norm.get(1, b"").decode(),
        "charsmap": norm.get(2, b""),
        "add_dummy_prefix": bool(norm.get(3, 1)),
        "remove_extra_whitespaces": bool(norm.get(4, 1)),
        "escape_whitespaces": bool(norm.get(5, 1)),
    }


def sentencepiece_to_tokenizers(tok: Tokenizer):
    """The ``tokenizers.Tokenizer`` equivalent of a gadx sentencepiece (unigram) tokenizer."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers
    from tokenizers import Tokenizer as HFTokenizer

    sp = read_sentencepiece(tok._backend.path)
    if sp["model_type"] != "unigram":
        raise ValueError(f"{tok.source}: only sentencepiece unigram models convert, got {sp['model_type']}")
    if sp["treat_whitespace_as_suffix"] or not sp["escape_whitespaces"]:
        raise ValueError(f"{tok.source}: unsupported sentencepiece whitespace settings "
                         "(treat_whitespace_as_suffix / escape_whitespaces=false)")
    vocab, unk_id = [], None
    for i, (piece, score, typ) in enumerate(sp["pieces"]):
        if typ == UNKNOWN:
            unk_id = i
        vocab.append((piece, NEVER if typ in UNMATCHED else score))
    hf = HFTokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=sp["byte_fallback"]))
    steps = []
    if sp["charsmap"]:
        steps.append(normalizers.Precompiled(sp["charsmap"]))
    if sp["remove_extra_whitespaces"]:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if sp["add_dummy_prefix"]:
        steps.append(normalizers.Prepend(" "))
    steps.append(normalizers.Replace(" ", "\u2581"))
    hf.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if sp["add_dummy_prefix"]:
        dec.append(decoders.Strip(" ", 1, 0))
    hf.decoder = decoders.Sequence(dec)
    # user-defined pieces match in the raw text before anything else, longest first, as in sentencepiece
    special = set(tok.special_tokens.values()) | set(tok.special_ids)
    user = [p for p, _, t in sp["pieces"] if t == USER_DEFINED]
    hf.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in user if p in special])
    hf.add_tokens([AddedToken(p, special=False, normalized=False) for p in user if p not in special])
    return hf


def _probes(tok: Tokenizer) -> list[str]:
    """Texts that exercise every piece, the special tokens inside text, spacing, digits and bytes."""
    pieces = [(p, t) for p, _, t in read_sentencepiece(tok._backend.path)["pieces"]] \
        if isinstance(tok._backend, _SPBackend) else []
    unmatched = {p for p, t in pieces if t in UNMATCHED}  # the known difference (module docstring)
    words = [p.replace("\u2581", " ") for p, t in pieces if t not in (BYTE, *UNMATCHED)]
    specials = sorted(set(tok.special_tokens.values()) - unmatched)
    out = [" ".join(words[i : i + 16]) for i in range(0, len(words), 16)]
    out += ["".join(words[i : i + 16]) for i in range(0, len(words), 16)]
    out += [
        "Hello, world!  Two  spaces,\ttab\nnew line\n\n  leading and trailing  ",
        "digits 0123456789 and 3.14159, 1e-9; x=42",
        "unicode: café naïve 東京 😀 — “quotes” ß Ωmega \u00a0nbsp",
        " ".join(specials) + "".join(specials) + "text" + (specials[0] if specials else "") + "more",
        "", " ", "\n",
    ]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3 + 3 ?"}]
    try:
        out.append(tok.apply_chat_template(msgs, add_generation_prompt=True))
    except Exception:  # noqa: BLE001 - a template that refuses a system turn: the other probes remain
        out.append(tok.apply_chat_template(msgs[1:], add_generation_prompt=True))
    return out


def _check_same(tok: Tokenizer, hf) -> None:
    for text in _probes(tok):
        want, got = tok.encode(text, add_special_tokens=False), hf.encode(text, add_special_tokens=False).ids
        if want != got:
            raise ValueError(f"{tok.source}: the exported tokenizer.json encodes {text[:80]!r} as {got[:20]}..., "
                             f"gadx as {want[:20]}...; not exporting a tokenizer that differs")
