"""The OpenAI chat-completions wire format, as much of it as `gadx serve` speaks.

`parse_chat_request(body, ...)` validates a request body into a `ChatRequest`
(raising `BadRequest` with the offending parameter); `completion_body` and
`stream_chunks` build the replies.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, str]]  # role + plain-text content
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


def _content_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"messages[{i}].content: only text parts are supported, got {part!r:.100}",
                                 f"messages.{i}.content")
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", f"messages.{i}.content")


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise BadRequest(f"{name} must be a number in [{lo}, {hi}], got {v!r}", name)
    return float(v)


def parse_chat_request(body: Any, *, default_max_tokens: int, max_tokens_limit: int) -> ChatRequest:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    parsed = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise BadRequest(f"messages[{i}] must have role system|developer|user|assistant", f"messages.{i}.role")
        role = "system" if m["role"] == "developer" else m["role"]
        parsed.append({"role": role, "content": _content_text(m.get("content"), i)})
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest(f"only n=1 is supported, got {n!r}", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(default_max_tokens, max_tokens_limit)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
    if max_tokens > max_tokens_limit:
        raise BadRequest(f"max_tokens={max_tokens} is above this server's limit of {max_tokens_limit}", "max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"seed must be an integer, got {seed!r}", "seed")
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4:
        stop = tuple(stop)
    else:
        raise BadRequest("stop must be a string or a list of up to 4 non-empty strings", "stop")
    return ChatRequest(
        messages=parsed,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=seed,
        stop=stop,
    )


def apply_stop(c: Completion, stop: tuple[str, ...]) -> Completion:
    """Cut the text at the first stop string (OpenAI semantics: the stop string is not returned)."""
    cut = min((i for s in stop if (i := c.text.find(s)) >= 0), default=-1)
    if cut < 0:
        return c
    return Completion(c.text[:cut], "stop", c.prompt_tokens, c.completion_tokens)


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def usage_body(c: Completion) -> dict[str, int]:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def completion_body(c: Completion, model: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                     "logprobs": None, "finish_reason": c.finish_reason}],
        "usage": usage_body(c),
    }


def stream_chunks(c: Completion, model: str, *, include_usage: bool, piece_chars: int = 16) -> Iterator[bytes]:
    """SSE events for a finished completion: role, content pieces, finish, [usage], [DONE]."""
    base = {"id": new_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def event(choices: list, usage: Any = None) -> bytes:
        chunk = {**base, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for i in range(0, len(c.text), piece_chars):
        yield event([{"index": 0, "delta": {"content": c.text[i:i + piece_chars]}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": c.finish_reason}])
    if include_usage:
        yield event([], usage_body(c))
    yield b"data: [DONE]\n\n"
