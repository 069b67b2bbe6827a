"""Tokenizer: one class over HF ``tokenizer.json`` and sentencepiece ``.model`` files.

    tok = load_tokenizer("ckpt/")     # tokenizer.json or *.model, + tokenizer_config.json
    ids = tok.encode_chat([{"role": "user", "content": "hi"}])   # prompt ids for the sampler
    text = tok.decode(response_ids)

Special tokens (bos/eos/pad/unk) come from ``tokenizer_config.json`` and
``special_tokens_map.json``; the chat template from the config's
``chat_template`` or ``chat_template.jinja``, else a built-in chosen by the
vocabulary (Llama 3 header tokens -> ``llama3``, otherwise ``chatml``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gadx.tokenizer import chat

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class _HFBackend:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for malformed files
            raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from None
        self.path = path
        self.special_ids = {t.content: i for i, t in self.tok.get_added_tokens_decoder().items()
                            if t.special}

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def save(self, folder: Path) -> None:
        self.tok.save(str(folder / "tokenizer.json"))


class _SPBackend:
    def __init__(self, path: Path, special_tokens: set[str]):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{path}: not a valid sentencepiece model ({e})") from None
        self.path = path
        # Control pieces (<s>, </s>, ...) plus the pieces the config calls special.
        self.special_ids = {self.sp.IdToPiece(i): i for i in range(self.sp.GetPieceSize())
                            if self.sp.IsControl(i) or self.sp.IdToPiece(i) in special_tokens}

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids = self.sp.EncodeAsIds(text)
        if add_special_tokens and self.sp.bos_id() >= 0:
            ids = [self.sp.bos_id()] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            drop = set(self.special_ids.values())
            ids = [i for i in ids if i not in drop]
        return self.sp.DecodeIds(list(ids))

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.PieceToId(token)
        return None if i == self.sp.unk_id() and token != self.sp.IdToPiece(i) else i

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def save(self, folder: Path) -> None:
        if self.path.resolve() != (folder / "tokenizer.model").resolve():
            shutil.copyfile(self.path, folder / "tokenizer.model")


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):  # serialized AddedToken
        return value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    def __init__(self, backend, *, special_tokens: dict[str, str], chat_template: str, config: dict[str, Any],
                 source: str):
        self._backend = backend
        self.special_tokens = special_tokens  # e.g. {"eos_token": "<|im_end|>", ...}
        self.chat_template = chat_template
        self.config = config
        self.source = source

    # ---- ids ----------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._backend.encode(text, add_special_tokens)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    def _special_id(self, key: str) -> int | None:
        tok = self.special_tokens.get(key)
        return None if tok is None else self.token_to_id(tok)

    @property
    def eos_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def bos_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def pad_id(self) -> int | None:
        return self._special_id("pad_token")

    @property
    def special_ids(self) -> dict[str, int]:
        """Every special token the backend knows (added/control tokens), content -> id."""
        return dict(self._backend.special_ids)

    # ---- chat ---------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any):
        """The rendered conversation (``tokenize=True``: its ids, as ``encode_chat``)."""
        text = chat.render(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=self.special_tokens, **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> list[int]:
        return self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                        **kwargs)

    # ---- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the tokenizer file and ``tokenizer_config.json`` (with the chat template) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._backend.save(folder)
        config = {k: v for k, v in self.config.items() if k not in SPECIAL_KEYS and k != "chat_template"}
        if isinstance(self._backend, _HFBackend):
            config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        config |= self.special_tokens
        config["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        (folder / "special_tokens_map.json").write_text(json.dumps(self.special_tokens, indent=2, ensure_ascii=False))
        return folder

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, eos={self.special_tokens.get('eos_token')!r})"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def _template_from_config(config: dict[str, Any], source: Path) -> str | None:
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    if tpl is not None and not isinstance(tpl, str):
        raise ValueError(f"{source}: chat_template must be a string, got {type(tpl).__name__}")
    return tpl


def load_tokenizer(path: str | Path, *, chat_template: str | None = None) -> Tokenizer:
    """Load a folder (tokenizer.json or a sentencepiece .model) or a single such file.

    ``chat_template`` overrides the checkpoint's: ``"chatml"``, ``"llama3"`` or Jinja source.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: tokenizer path does not exist")
    folder = path if path.is_dir() else path.parent
    config_path = folder / "tokenizer_config.json"
    config = _read_json(config_path)
    special_map = _read_json(folder / "special_tokens_map.json")
    special_tokens = {}
    for key in SPECIAL_KEYS:
        value = _token_str(config.get(key)) or _token_str(special_map.get(key))
        if value is not None:
            special_tokens[key] = value

    if path.is_file():
        file = path
    elif (folder / "tokenizer.json").is_file():
        file = folder / "tokenizer.json"
    else:
        models = sorted(folder.glob("*.model"))
        if not models:
            raise ValueError(f"{folder}: no tokenizer.json or sentencepiece .model file")
        file = next((m for m in models if m.name == "tokenizer.model"), models[0])
    if file.suffix == ".json":
        backend = _HFBackend(file)
    elif file.suffix == ".model":
        extra = {_token_str(t) for t in config.get("additional_special_tokens") or []} | set(special_tokens.values())
        backend = _SPBackend(file, {t for t in extra if t})
        for key, piece_id in (("bos_token", backend.sp.bos_id()), ("eos_token", backend.sp.eos_id()),
                              ("pad_token", backend.sp.pad_id()), ("unk_token", backend.sp.unk_id())):
            if key not in special_tokens and piece_id >= 0:
                special_tokens[key] = backend.sp.IdToPiece(piece_id)
    else:
        raise ValueError(f"{file}: expected tokenizer.json or a sentencepiece .model file")

    for key, tok in special_tokens.items():
        if backend.token_to_id(tok) is None:
            raise ValueError(f"{config_path}: {key} {tok!r} is not in the vocabulary of {file}")

    template = chat_template or _template_from_config(config, config_path)
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    if template is None:
        template = "llama3" if backend.token_to_id("<|start_header_id|>") is not None else "chatml"
    template = chat.BUILTIN.get(template, template)
    return Tokenizer(backend, special_tokens=special_tokens, chat_template=template, config=config, source=str(file))


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, *, model_source: str = "config.json") -> None:
    """Raise ValueError when the tokenizer can emit ids the model's embedding does not have.

    A model vocabulary larger than the tokenizer's is fine (checkpoints often pad it).
    """
    if tokenizer.vocab_size > model_vocab_size:
        raise ValueError(
            f"{tokenizer.source}: tokenizer vocab_size {tokenizer.vocab_size} exceeds the model's "
            f"vocab_size {model_vocab_size} ({model_source})"
        )
