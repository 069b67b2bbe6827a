"""What generates the replies behind `gadx serve`.

A backend is any object with
    name: str                                      # shown by /v1/models
    check(request: ChatRequest) -> None            # raise BadRequest before queueing (e.g. context length)
    generate(batch: list[ChatRequest]) -> list[Completion]
`generate` is synchronous and runs in one worker thread, one batch at a time.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Protocol

from gadx.serve.protocol import BadRequest, ChatRequest, Completion


class Backend(Protocol):
    name: str

    def check(self, request: ChatRequest) -> None: ...

    def generate(self, batch: list[ChatRequest]) -> list[Completion]: ...


def _words(text: str) -> int:
    return len(text.split())


class SyntheticBackend:
    """The embedded synthetic teacher (gadx.world.SyntheticTeacher); token counts are the
    world's own (gadx.world.count_tokens)."""

    name = "gadx-synthetic-teacher"

    def __init__(self, seed: int = 0):
        from gadx.world import SyntheticTeacher, count_tokens  # lazy: only needed when serving it

        self.teacher = SyntheticTeacher(seed)
        self._count = count_tokens
        self._auto_seed = itertools.count(1)

    def check(self, request: ChatRequest) -> None:
        pass

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        out = []
        for r in batch:
            # An unseeded request still gets a fresh seed so repeated calls sample differently.
            seed = r.seed if r.seed is not None else next(self._auto_seed) + 2**40
            try:
                text, finish = self.teacher.reply(r.messages, temperature=r.temperature, max_tokens=r.max_tokens,
                                                  seed=seed)
            except ValueError as e:  # a prompt outside the world
                raise BadRequest(str(e), "messages") from None
            prompt_tokens = sum(self._count(m["content"]) for m in r.messages)
            out.append(Completion(text, finish, prompt_tokens, self._count(text)))
        return out


def check_model_folder(path: str) -> None:
    """ValueError naming the folder or file when `path` is not a loadable HF model folder: missing,
    not a folder, no or unreadable config.json, a safetensors file whose header does not read."""
    folder = Path(path)
    if not folder.exists():
        hint = f" (did you mean --{path}?)" if path in ("synthetic", "echo") else ""
        raise ValueError(f"--model {path}: no such folder{hint}")
    if not folder.is_dir():
        raise ValueError(f"--model {path}: not a folder (give the folder holding config.json and the weights)")
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{config}: missing; a model folder holds config.json, *.safetensors and a tokenizer")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{config}: not valid JSON ({e})") from None
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        from safetensors import safe_open

        for f in weights:
            try:  # reads the header only; catches truncated and non-safetensors files
                with safe_open(str(f), framework="pt") as h:
                    h.keys()
            except Exception as e:  # noqa: BLE001 -- safetensors raises its own error type
                raise ValueError(f"{f}: not a readable safetensors file ({' '.join(str(e).split())})") from None


class CheckpointBackend:
    """A HF-format checkpoint folder (config.json, safetensors, tokenizer) served with
    gadx's KV-cache sampler; requests in one batch that share sampling settings are
    generated together."""

    def __init__(self, path: str, *, device: str = "cpu", max_batch: int = 64, name: str | None = None):
        check_model_folder(path)
        from gadx.models.config import ModelConfig
        from gadx.sampler import from_pretrained
        from gadx.tokenizer import load_tokenizer

        try:
            self.cfg = ModelConfig.from_pretrained(path)
            self.sampler = from_pretrained(path, device=device, max_batch=max_batch)
            self.tokenizer = load_tokenizer(path)
        except (ValueError, OSError, KeyError, RuntimeError) as e:  # whatever the loaders say, name the folder
            msg = " ".join(str(e).split())
            raise ValueError(msg if str(path) in msg else f"{path}: cannot load the model: {msg}") from e
        self.name = name or str(path).rstrip("/").rsplit("/", 1)[-1]

    def _prompt_ids(self, request: ChatRequest) -> list[int]:
        return self.tokenizer.encode_chat(request.messages, add_generation_prompt=True)

    def check(self, request: ChatRequest) -> None:
        n = len(self._prompt_ids(request))
        limit = self.cfg.max_position_embeddings
        if n + request.max_tokens > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{n + request.max_tokens} tokens ({n} in the messages, {request.max_tokens} in the completion).",
                "messages", "context_length_exceeded",
            )

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(batch)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault((r.temperature, r.top_p, r.seed), []).append(i)
        eos = set(self.cfg.eos_ids)
        for (temperature, top_p, seed), idx in groups.items():
            prompts = [self._prompt_ids(batch[i]) for i in idx]
            rollout = self.sampler.generate(prompts, max_new_tokens=max(batch[i].max_tokens for i in idx),
                                            temperature=temperature, top_p=top_p, eos_ids=sorted(eos), seed=seed)
            for j, i in enumerate(idx):
                ids = rollout.responses[j][: batch[i].max_tokens]
                finished = bool(ids) and ids[-1] in eos
                text_ids = ids[:-1] if finished else ids
                out[i] = Completion(self.tokenizer.decode(text_ids), "stop" if finished else "length",
                                    len(prompts[j]), len(ids))
        return out  # type: ignore[return-value]


class EchoBackend:
    """Replies with the last user message, reversed word by word; for tests and load checks."""

    name = "echo"

    def check(self, request: ChatRequest) -> None:
        pass

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        out = []
        for r in batch:
            words = r.messages[-1]["content"].split()[::-1]
            text = " ".join(words[: r.max_tokens])
            out.append(Completion(text, "length" if len(words) > r.max_tokens else "stop",
                                  sum(_words(m["content"]) for m in r.messages), min(len(words), r.max_tokens)))
        return out
