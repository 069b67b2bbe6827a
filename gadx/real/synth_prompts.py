"""Synthetic prompts written by the teacher itself (Magpie-style), and the teacher's replies to them.

    prefix = user_turn_prefix(tok)                      # the chat template up to where a user's words begin
    raw = sample_user_turns(engine, prefix, n=2400, eos_ids=mc.eos_ids, temperature=1.0)
    kept, counts = filter_prompts(raw, tokenizer=tok, avoid=eval_prompt_texts(), max_prompt_len=128)
    replies = sample_replies(engine, tok, kept, eos_ids=mc.eos_ids, temperature=0.7, max_new_tokens=128)

Why: 64 Self-Instruct training prompts (those whose teacher reply ends within 64 tokens) are too few
for a heal that generalises; an SFT heal on them memorises the replies and writes word salad on
unseen prompts. An instruct model fed its chat template up to the start of a user turn (e.g.
"<|im_start|>user\\n" after the default system turn) and sampled at T ~ 1 writes a plausible user
request and stops at its end-of-turn token: an unlimited source of in-distribution prompts.

Filters (``filter_prompts``): the turn must have ended (EOS) within the budget, hold no other special
token, have at least ``min_words`` words, fit ``max_prompt_len`` tokens once rendered as a prompt (the
trainer cuts longer prompts on the right), not repeat an earlier kept prompt (normalised text), and not
equal or nearly equal any evaluation prompt: word 3-gram Jaccard >= ``near_jaccard`` or normalised
containment either way. Every drop is counted by reason.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_MARK = "\x00GADX_USER_TURN\x00"


def user_turn_prefix(tok) -> list[int]:
    """Token ids of the chat template rendered up to (not including) a user turn's content: the
    default system turn, if the template adds one, then the user header."""
    text = tok.apply_chat_template([{"role": "user", "content": _MARK}], add_generation_prompt=False)
    if _MARK not in text:
        raise ValueError("the chat template does not render the user's content verbatim; cannot cut a user-turn prefix")
    ids = tok.encode(text[: text.index(_MARK)], add_special_tokens=False)
    if not ids:
        raise ValueError("the chat template renders nothing before the user's content")
    return ids


def sample_user_turns(engine, prefix: Sequence[int], *, n: int, eos_ids: Sequence[int], temperature: float = 1.0,
                      max_new_tokens: int = 64, batch: int = 64, seed: int = 0,
                      log: Callable[[str], None] | None = None) -> list[tuple[list[int], bool]]:
    """``n`` user turns sampled from ``prefix``: (token ids without EOS, ended with EOS)."""
    if n < 1 or batch < 1 or max_new_tokens < 1 or temperature <= 0:
        raise ValueError(f"n={n}, batch={batch}, max_new_tokens={max_new_tokens} must be >= 1 and "
                         f"temperature={temperature} > 0")
    out: list[tuple[list[int], bool]] = []
    eos = set(eos_ids)
    for b, c in enumerate(range(0, n, batch)):
        m = min(batch, n - c)
        roll = engine.generate([list(prefix)] * m, max_new_tokens=max_new_tokens, temperature=temperature,
                               eos_ids=list(eos_ids), seed=seed * 100_003 + b)
        for r, fin in zip(roll.responses, roll.finished):
            r = list(r)
            out.append((r[:-1] if fin and r and r[-1] in eos else r, bool(fin)))
        if log:
            log(f"user turns: {len(out)}/{n}")
    return out


def normalise(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space: what 'the same prompt' means here."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _trigrams(norm: str) -> set[tuple[str, ...]]:
    w = norm.split()
    return {tuple(w[i:i + 3]) for i in range(max(len(w) - 2, 1))}


def near_duplicate(a: str, b: str, *, jaccard: float = 0.5) -> bool:
    """Normalised ``a`` and ``b`` are equal, one contains the other, or their word 3-grams overlap
    with Jaccard >= ``jaccard``."""
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return na == nb
    if na in nb or nb in na:
        return True
    ta, tb = _trigrams(na), _trigrams(nb)
    return len(ta & tb) / len(ta | tb) >= jaccard


def eval_prompt_texts() -> list[str]:
    """The user turns of every evaluation prompt (all Self-Instruct, Vicuna 80, MT-bench 80 turns): a
    synthetic prompt must not reproduce any of them."""
    from gadx.eval.suites import load_suite

    return [m["content"] for suite in ("selfinst", "vicuna", "mtbench") for p in load_suite(suite).prompts
            for m in p.messages if m["role"] == "user"]


def filter_prompts(samples: Sequence[tuple[list[int], bool]], *, tokenizer, avoid: Sequence[str] = (),
                   max_prompt_len: int = 128, min_words: int = 3, near_jaccard: float = 0.5) -> tuple[list[str], dict]:
    """(kept prompt texts in sampling order, counts: sampled, kept and one count per drop reason)."""
    if max_prompt_len < 1 or min_words < 0 or not 0 < near_jaccard <= 1:
        raise ValueError(f"max_prompt_len={max_prompt_len} >= 1, min_words={min_words} >= 0, "
                         f"near_jaccard={near_jaccard} in (0, 1] expected")
    special = set(tokenizer.special_ids.values())
    avoid_n = [(normalise(t), _trigrams(normalise(t))) for t in avoid]
    counts = dict.fromkeys(("sampled", "kept", "unfinished", "special_token", "too_short", "too_long",
                            "duplicate", "near_eval"), 0)
    counts["sampled"] = len(samples)
    seen: set[str] = set()
    kept: list[str] = []
    for ids, finished in samples:
        if not finished:
            counts["unfinished"] += 1
            continue
        if any(i in special for i in ids):
            counts["special_token"] += 1
            continue
        text = tokenizer.decode(list(ids), skip_special_tokens=True).strip()
        norm = normalise(text)
        if len(norm.split()) < max(min_words, 1):
            counts["too_short"] += 1
            continue
        if len(tokenizer.encode_chat([{"role": "user", "content": text}], add_generation_prompt=True)) > max_prompt_len:
            counts["too_long"] += 1
            continue
        if norm in seen:
            counts["duplicate"] += 1
            continue
        tri = _trigrams(norm)
        if any(norm == a or norm in a or a in norm or len(tri & ta) / len(tri | ta) >= near_jaccard
               for a, ta in avoid_n if a):
            counts["near_eval"] += 1
            continue
        seen.add(norm)
        kept.append(text)
    counts["kept"] = len(kept)
    return kept, counts


def sample_replies(engine, tok, prompts: Sequence[str], *, eos_ids: Sequence[int], temperature: float = 0.7,
                   max_new_tokens: int = 128, max_prompt_len: int = 128, batch: int = 64, seed: int = 0,
                   log: Callable[[str], None] | None = None) -> list[tuple[list[int], bool]]:
    """The teacher's reply to each prompt, asked as the trainer renders prompts (chat template +
    generation prompt): (token ids, EOS included when it finished; finished)."""
    from gadx.train.sequences import encode_prompt

    out: list[tuple[list[int], bool]] = []
    for b, c in enumerate(range(0, len(prompts), batch)):
        P = [encode_prompt(tok, [{"role": "user", "content": t}], max_prompt_len).ids for t in prompts[c:c + batch]]
        roll = engine.generate(P, max_new_tokens=max_new_tokens, temperature=temperature, eos_ids=list(eos_ids),
                               seed=seed * 100_003 + b)
        out += [(list(r), bool(f)) for r, f in zip(roll.responses, roll.finished)]
        if log:
            log(f"replies: {len(out)}/{len(prompts)}")
    return out
