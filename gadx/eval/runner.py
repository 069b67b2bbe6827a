"""The evaluation loop behind `gadx eval`, and the small in-training eval.

    from gadx.eval.runner import run_eval, evaluate_small
    results = run_eval([("teacher", teacher_fn), ("gad", gad_fn)], suites, judge=judge, out_dir="out")
    metrics = evaluate_small(engine, tokenizer, eos_ids=[2], suites=("vicuna",), limit=8)

``run_eval`` takes models as (name, answer_fn) pairs, answer_fn(prompts) ->
list[Answer]; each model answers every suite before the next model is asked
(so a caller can load one checkpoint at a time). The judge's reference answers
are computed once per suite. The first model whose name is ``teacher`` (the
CLI's teacher row) provides the replies that the others' ROUGE-L / n-gram
overlaps are measured against, unless the suite carries its own
``teacher_response`` column (the LMSYS parquet), which wins.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from gadx.eval.diagnostics import length_stats, overlap_metrics, world_metrics
from gadx.eval.generate import Answer, Student, student_answers
from gadx.eval.judge import Judge
from gadx.eval.metrics import AGGREGATION, aggregate
from gadx.eval.suites import EvalPrompt, Suite, load_suite

AnswerFn = Callable[[Sequence[EvalPrompt]], list[Answer]]
TEACHER_ROW = "teacher"


def run_eval(models: Sequence[tuple[str, AnswerFn]], suites: Sequence[Suite], *, judge: Judge | None,
             out_dir: str | Path | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Answer, judge and summarise; per-prompt records go to out_dir/answers/<model>__<suite>.jsonl."""
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    refs: dict[str, list[str]] = {}
    teacher_texts: dict[str, list[str]] = {}
    results: dict[str, dict[str, dict]] = {}
    for name, answer_fn in models:
        results[name] = {}
        for suite in suites:
            answers = answer_fn(suite.prompts)
            assert len(answers) == len(suite.prompts)
            if name == TEACHER_ROW:
                teacher_texts[suite.name] = [a.text for a in answers]
            judgements = None
            if judge is not None:
                if suite.name not in refs:
                    refs[suite.name] = judge.references(suite.prompts)
                judgements = judge.score_batch([p.question for p in suite.prompts], refs[suite.name],
                                               [a.text for a in answers])
            lengths = [a.n_tokens for a in answers]
            score = aggregate(judgements, lengths, n_boot=n_boot, seed=seed)
            diag = length_stats(lengths, [a.finished for a in answers])
            del diag["len_mean"]  # = score.mean_len_tokens
            against = _overlap_refs(suite, teacher_texts, is_teacher=name == TEACHER_ROW)
            if against is not None:
                diag.update(overlap_metrics([a.text for a in answers], against))
            results[name][suite.name] = {**score.to_dict(), **diag}
            if out_dir is not None:
                _write_records(Path(out_dir), name, suite, answers, judgements, refs.get(suite.name))
    return {"aggregation": AGGREGATION, "models": names, "suites": [s.name for s in suites],
            "suite_sources": {s.name: s.source for s in suites}, "results": results}


def _overlap_refs(suite: Suite, teacher_texts: dict[str, list[str]], *, is_teacher: bool) -> list[str] | None:
    if all(p.teacher_response is not None for p in suite.prompts):
        return [p.teacher_response for p in suite.prompts]
    if not is_teacher and suite.name in teacher_texts:
        return teacher_texts[suite.name]
    return None


def _write_records(out: Path, model: str, suite: Suite, answers, judgements, refs) -> None:
    path = out / "answers" / f"{_safe(model)}__{_safe(suite.name)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, (p, a) in enumerate(zip(suite.prompts, answers)):
            rec = {"id": p.id, "messages": p.messages, "answer": a.text, "n_tokens": a.n_tokens,
                   "finished": a.finished}
            if judgements is not None:
                j = judgements[i]
                rec.update(reference=refs[i], reference_score=j.reference_score, student_score=j.student_score,
                           judge_attempts=j.attempts, judge_raw=j.raw)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def evaluate_small(engine, tokenizer, *, eos_ids: Sequence[int], suites: Sequence[str] = ("vicuna",),
                   limit: int | None = 8, max_new_tokens: int = 256, batch_size: int = 8,
                   judge: Judge | None = None, world=None, world_split: str = "test_id",
                   seed: int = 0, prefix: str = "eval/") -> dict[str, float]:
    """A cheap eval for the trainer every K steps: flat {"eval/<suite>/<metric>": value}.

    ``engine`` is the trainer's RolloutEngine with current weights. Judge-free
    diagnostics always (lengths; overlaps where the suite has teacher replies;
    task accuracy and exact teacher log-likelihood when ``world`` is given, on
    ``limit`` examples of ``world_split``); the judge score only when ``judge`` is given.
    """
    student = Student(engine, tokenizer, list(eos_ids))

    def answer(prompts):
        return student_answers(student, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)

    out: dict[str, float] = {}
    loaded = [load_suite(s, limit=limit) for s in suites]
    if loaded:
        res = run_eval([("student", answer)], loaded, judge=judge, n_boot=200, seed=seed)["results"]["student"]
        for suite_name, metrics in res.items():
            for k, v in metrics.items():
                if v is not None and k in _SMALL_KEYS:
                    out[f"{prefix}{suite_name}/{k}"] = float(v)
    if world is not None:
        examples = world.split(world_split)[:limit]
        prompts = [EvalPrompt(str(i), [{"role": "user", "content": ex.prompt}]) for i, ex in enumerate(examples)]
        answers = answer(prompts)
        wm = world_metrics(world, [ex.prompt for ex in examples], [a.text for a in answers],
                           [a.n_tokens for a in answers])
        wm.update(length_stats([a.n_tokens for a in answers], [a.finished for a in answers]))
        out.update({f"{prefix}world_{world_split}/{k}": float(v) for k, v in wm.items()})
    return out


_SMALL_KEYS = ("score", "per_sample_mean", "n_unparseable", "mean_len_tokens", "len_p50", "truncated_frac",
               "rougeL_f1", "ngram1_f1", "ngram2_f1")
