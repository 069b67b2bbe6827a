"""LLM-as-judge protocol of the GAD paper (MiniLLM's GPT-4 feedback prompt).

For each prompt the judge model first writes its own reference answer; then
one judge call shows the question, the reference as Assistant 1 and the
evaluated answer as Assistant 2, and asks for two 1-10 scores on the first
line followed by an explanation.

    from gadx.teacher import TeacherClient
    from gadx.eval.judge import ClientJudge
    with TeacherClient(url, "gpt-4o", cache_path="judge.sqlite") as client:
        judge = ClientJudge(client)
        refs = judge.references(prompts)                 # cached per prompt
        marks = judge.score_batch(questions, refs, answers)

Score-line grammar (``parse_scores``), applied to the first non-blank line
only (the explanation below it often quotes other numbers, so it is never
searched). Markdown emphasis (``*``, backticks, leading ``#``) is ignored.
Accepted, case-insensitively:
    [LABEL] A SEP B [.]             e.g. "8 7", "8, 7", "Scores: 8 and 7", "**8.5 9**"
    Assistant 1: A SEP Assistant 2: B   e.g. "Assistant 1: 8, Assistant 2: 7"
with LABEL = score(s)|rating(s) plus an optional colon, SEP = whitespace,
"," ";" or "and", and A, B numbers in [1, 10] (decimals allowed). "/" is not
a separator: "8/10" reads as "8 out of 10". Anything else (one number, three
numbers, 0 or 11, "8/10 7/10", prose) is
unparseable: the call is repeated with another ``sample_index`` (a fresh,
separately cached sample at ``retry_temperature``) up to ``max_attempts``
times, then the prompt is marked unparseable and left out of the score.
Nothing is ever guessed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from gadx.eval.suites import EvalPrompt

# FastChat's v1 "general" reviewer prompt (fastchat/eval/table/prompt.jsonl,
# prompt_id 1), the one MiniLLM and the GAD paper use with GPT-4 / GPT-4o.
JUDGE_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
JUDGE_INSTRUCTION = (
    "We would like to request your feedback on the performance of two AI assistants in response to the "
    "user question displayed above.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in "
    "which the responses were presented does not affect your judgment."
)
JUDGE_TEMPLATE = (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n"
    "[System]\n{instruction}\n\n"
)


def render_judge_messages(question: str, reference: str, answer: str) -> list[dict]:
    """Chat messages of one judge call: reference = Assistant 1, evaluated answer = Assistant 2."""
    user = JUDGE_TEMPLATE.format(question=question, answer_1=reference, answer_2=answer,
                                 instruction=JUDGE_INSTRUCTION)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_NUM = r"(\d+(?:\.\d+)?)"
_SEP = r"(?:\s*[,;]\s*|\s+and\s+|\s+)"
_PAIR = re.compile(rf"(?:(?:scores?|ratings?)\s*:?\s*)?{_NUM}{_SEP}{_NUM}\s*\.?", re.IGNORECASE)
_NAMED = re.compile(
    rf"assistant\s*1\s*[:=]?\s*{_NUM}\s*[,;]?\s*assistant\s*2\s*[:=]?\s*{_NUM}\s*\.?", re.IGNORECASE
)


def parse_scores(text: str) -> tuple[float, float] | None:
    """(Assistant 1 score, Assistant 2 score) from the first non-blank line, or None (see module docstring)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = line.replace("*", "").replace("`", "").strip().lstrip("#").strip()
    m = _PAIR.fullmatch(line) or _NAMED.fullmatch(line)
    if m is None:
        return None
    a, b = float(m.group(1)), float(m.group(2))
    if not (1.0 <= a <= 10.0 and 1.0 <= b <= 10.0):
        return None
    return a, b


@dataclass
class Judgement:
    reference_score: float | None  # Assistant 1
    student_score: float | None  # Assistant 2
    raw: str  # the judge's last reply
    attempts: int

    @property
    def parsed(self) -> bool:
        return self.student_score is not None


class Judge(Protocol):
    def references(self, prompts: Sequence[EvalPrompt]) -> list[str]: ...

    def score_batch(self, questions: Sequence[str], references: Sequence[str],
                    answers: Sequence[str]) -> list[Judgement]: ...


class ClientJudge:
    """The judge protocol over a ``gadx.teacher.TeacherClient`` (cache, retries, limits, cost)."""

    def __init__(self, client, *, max_attempts: int = 3, temperature: float = 0.0,
                 retry_temperature: float = 0.7, max_tokens: int = 1024, reference_max_tokens: int = 2048):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.client = client
        self.max_attempts = max_attempts
        self.temperature = temperature
        self.retry_temperature = retry_temperature
        self.max_tokens = max_tokens
        self.reference_max_tokens = reference_max_tokens

    def references(self, prompts: Sequence[EvalPrompt]) -> list[str]:
        futs = [self.client.submit(p.messages, temperature=0.0, max_tokens=self.reference_max_tokens)
                for p in prompts]
        return [f.result().text for f in futs]

    def score_batch(self, questions: Sequence[str], references: Sequence[str],
                    answers: Sequence[str]) -> list[Judgement]:
        if not (len(questions) == len(references) == len(answers)):
            raise ValueError(f"lengths differ: {len(questions)} questions, {len(references)} references, "
                             f"{len(answers)} answers")
        msgs = [render_judge_messages(q, r, a) for q, r, a in zip(questions, references, answers)]
        out: list[Judgement | None] = [None] * len(msgs)
        todo = list(range(len(msgs)))
        for attempt in range(self.max_attempts):
            temp = self.temperature if attempt == 0 else self.retry_temperature
            futs = {i: self.client.submit(msgs[i], sample_index=attempt, temperature=temp,
                                          max_tokens=self.max_tokens) for i in todo}
            still = []
            for i, fut in futs.items():
                text = fut.result().text or ""
                scores = parse_scores(text)
                if scores is None:
                    out[i] = Judgement(None, None, text, attempt + 1)
                    still.append(i)
                else:
                    out[i] = Judgement(scores[0], scores[1], text, attempt + 1)
            todo = still
            if not todo:
                break
        assert all(j is not None for j in out)
        return out  # type: ignore[return-value]
