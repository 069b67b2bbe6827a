"""Answers to evaluate: a student checkpoint decoded greedily, or the teacher through its API.

    from gadx.eval.generate import load_student, student_answers, teacher_answers
    student = load_student("runs/gad/step_2400")
    answers = student_answers(student, suite.prompts, max_new_tokens=1536, batch_size=16)
    answers = teacher_answers(client, suite.prompts, max_new_tokens=1536, count_tokens=student.count_tokens)

Students decode greedily (the paper's protocol) with the KV-cache sampler,
prompts rendered with the checkpoint's chat template. Lengths are in
response tokens, EOS excluded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from gadx.eval.suites import EvalPrompt


@dataclass
class Answer:
    text: str
    n_tokens: int
    finished: bool  # False when cut at max_new_tokens


@dataclass
class Student:
    engine: object  # gadx.sampler.RolloutEngine
    tokenizer: object  # gadx.tokenizer.Tokenizer
    eos_ids: list[int]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def load_student(ckpt: str | Path, *, device: str = "cpu", dtype=None, max_batch: int = 16,
                 prompts: Sequence[EvalPrompt] = (), max_new_tokens: int = 1536) -> Student:
    """An HF-format checkpoint folder (config.json, safetensors, tokenizer files) ready to decode.

    The KV cache is sized for the longest of ``prompts`` plus ``max_new_tokens``
    (capped at the model's max_position_embeddings), not for the model's full context.
    """
    import torch

    from gadx.models.config import ModelConfig
    from gadx.sampler import from_pretrained
    from gadx.tokenizer import load_tokenizer

    ckpt = Path(ckpt)
    if not (ckpt / "config.json").is_file():
        raise ValueError(f"--model {ckpt}: not a checkpoint folder (no config.json)")
    cfg = ModelConfig.from_pretrained(ckpt)
    tok = load_tokenizer(ckpt)
    longest = max((len(tok.encode_chat(p.messages, add_generation_prompt=True)) for p in prompts), default=0)
    max_seq_len = max(2, min(cfg.max_position_embeddings, longest + max_new_tokens))
    engine = from_pretrained(ckpt, device=device, dtype=dtype or torch.float32, max_batch=max_batch,
                             max_seq_len=max_seq_len)
    return Student(engine, tok, list(cfg.eos_ids))


def student_answers(student: Student, prompts: Sequence[EvalPrompt], *, max_new_tokens: int = 1536,
                    batch_size: int = 16, temperature: float = 0.0, seed: int = 0) -> list[Answer]:
    """Greedy answers (``temperature`` > 0: one sample each, seeded by ``seed`` and the batch), batched
    by similar prompt length.

    When the engine reports a ``max_seq_len`` (the KV-cache sampler does), a
    prompt that leaves less room than ``max_new_tokens`` is decoded alone with
    the room it has (so it never shortens the others' budget); a prompt that
    leaves none is a ValueError.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = [student.tokenizer.encode_chat(p.messages, add_generation_prompt=True) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    room = getattr(student.engine, "max_seq_len", None)
    fits = [i for i in order if room is None or len(ids[i]) + max_new_tokens <= room]
    batches = [(fits[b:b + batch_size], max_new_tokens) for b in range(0, len(fits), batch_size)]
    for i in order[len(fits):]:  # sorted by length, so the tight ones are the tail
        if room - len(ids[i]) < 1:
            raise ValueError(f"prompt {prompts[i].id!r} has {len(ids[i])} tokens, "
                             f"no room left in the sampler's max_seq_len={room}")
        batches.append(([i], room - len(ids[i])))
    out: list[Answer | None] = [None] * len(ids)
    eos = set(student.eos_ids)
    for b, (idx, new) in enumerate(batches):
        roll = student.engine.generate([ids[i] for i in idx], max_new_tokens=new, temperature=temperature,
                                       eos_ids=student.eos_ids, seed=seed * 100_003 + b if temperature > 0 else None)
        for i, resp, fin in zip(idx, roll.responses, roll.finished):
            resp = list(resp)
            if resp and resp[-1] in eos:
                resp = resp[:-1]
            out[i] = Answer(student.tokenizer.decode(resp, skip_special_tokens=True), len(resp), bool(fin))
    return out  # type: ignore[return-value]


def teacher_answers(client, prompts: Sequence[EvalPrompt], *, max_new_tokens: int = 1536,
                    count_tokens: Callable[[str], int] | None = None) -> list[Answer]:
    """The teacher's greedy answers through a TeacherClient (the paper's teacher row).

    Lengths use ``count_tokens`` (pass a student's tokenizer so rows compare)
    and fall back to the API's completion_tokens.
    """
    futs = [client.submit(p.messages, temperature=0.0, max_tokens=max_new_tokens) for p in prompts]
    out = []
    for f in futs:
        reply = f.result()
        n = count_tokens(reply.text) if count_tokens is not None else _completion_tokens(reply)
        out.append(Answer(reply.text, n, reply.finish_reason != "length"))
    return out


def _completion_tokens(reply) -> int:
    usage = reply.usage
    n = usage.get("completion_tokens") if isinstance(usage, dict) else getattr(usage, "completion_tokens", None)
    if n is None:
        raise ValueError("the teacher API reported no completion_tokens; pass count_tokens (a --model's tokenizer)")
    return int(n)
