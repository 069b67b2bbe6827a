"""Tokenisation rules shared by every stage (see docs: gad-method.md, "Tokenisation details that bite").

- The prompt is rendered with the student's chat template (generation prompt
  added) and cut on the right to ``max_prompt_len`` (the paper's truncation;
  callers count how many were cut).
- Teacher text is tokenised WITHOUT special tokens and the student's EOS is
  appended, so teacher and student replies both end in EOS; a reply longer
  than ``max_response_len`` keeps its first tokens and no EOS.
- Student samples already end with EOS when finished (the sampler keeps it).
- D scores a sequence at its last kept token: ``len(prompt) + len(response) - 1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class _Tok(Protocol):
    eos_id: int

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    def encode_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]: ...


@dataclass
class Prompt:
    ids: list[int]
    truncated: bool


def encode_prompt(tok: _Tok, messages: list[dict[str, Any]], max_prompt_len: int) -> Prompt:
    ids = tok.encode_chat(messages, add_generation_prompt=True)
    if len(ids) > max_prompt_len:
        return Prompt(ids[:max_prompt_len], True)
    return Prompt(ids, False)


def encode_teacher_reply(tok: _Tok, text: str, max_response_len: int) -> list[int]:
    """Teacher reply ids: no special tokens, then EOS; cut at ``max_response_len`` (then no EOS)."""
    ids = tok.encode(text, add_special_tokens=False) + [tok.eos_id]
    return ids[:max_response_len]


def score_index(prompt_len: int, response_len: int) -> int:
    """Position D reads: the last token of the response (EOS when finished, else the last kept one)."""
    assert response_len >= 1, "a response has at least one token"
    return prompt_len + response_len - 1
