"""Judge-free diagnostics: overlap with teacher replies, length distribution, synthetic-world truth.

    from gadx.eval.diagnostics import overlap_metrics, length_stats, world_metrics
    overlap_metrics(student_texts, teacher_texts)  # {"rougeL_f1", "ngram1_f1", "ngram2_f1"} (means, 0-100)
    length_stats(lengths, finished)                # mean / p10 / p50 / p90 / max / truncated_frac
    world_metrics(world, prompts, responses, n_tokens)  # task accuracy, exact teacher log-lik per token

Text is compared on ``tokenize``: lowercase alphanumeric runs (as the rouge
package's default tokenizer does, without stemming). The paper uses these
overlaps only as a training diagnostic, never as the headline metric.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Longest common subsequence length, bit-parallel (Hyyro 2004): O(len(a) * len(b) / wordsize)."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full  # a zero bit i means row i of the DP table has advanced
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_l_f1(hyp: str, ref: str) -> float:
    h, r = tokenize(hyp), tokenize(ref)
    return _f1(lcs_length(h, r), len(h), len(r))


def ngram_f1(hyp: str, ref: str, n: int = 1) -> float:
    """F1 of clipped n-gram overlap (multiset intersection)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    h, r = tokenize(hyp), tokenize(ref)
    hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
    rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
    return _f1(sum((hc & rc).values()), sum(hc.values()), sum(rc.values()))


def overlap_metrics(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L F1 and unigram / bigram overlap F1, in percent."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need equal, non-zero counts of responses and references, got {len(hyps)} / {len(refs)}")
    return {
        "rougeL_f1": 100 * float(np.mean([rouge_l_f1(h, r) for h, r in zip(hyps, refs)])),
        "ngram1_f1": 100 * float(np.mean([ngram_f1(h, r, 1) for h, r in zip(hyps, refs)])),
        "ngram2_f1": 100 * float(np.mean([ngram_f1(h, r, 2) for h, r in zip(hyps, refs)])),
    }


def length_stats(lengths: Sequence[int], finished: Sequence[bool] | None = None) -> dict[str, float]:
    """Response length distribution in tokens; ``truncated_frac`` = share that hit the token limit."""
    if not len(lengths):
        raise ValueError("no lengths")
    x = np.asarray(lengths, dtype=np.float64)
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    out = {"len_mean": float(x.mean()), "len_p10": float(p10), "len_p50": float(p50),
           "len_p90": float(p90), "len_max": float(x.max())}
    if finished is not None:
        if len(finished) != len(lengths):
            raise ValueError(f"{len(finished)} finished flags for {len(lengths)} lengths")
        out["truncated_frac"] = float(1.0 - np.mean(np.asarray(finished, dtype=np.float64)))
    return out


def world_metrics(world, prompts: Sequence[str], responses: Sequence[str],
                  n_tokens: Sequence[int]) -> dict[str, float]:
    """Synthetic-world truth: task accuracy and the exact teacher log-likelihood of the student's replies.

    ``teacher_logprob_per_token`` = sum of world.teacher.logprob over replies the
    teacher can produce / their total token count (student tokenizer);
    ``teacher_impossible_frac`` = share of replies with log-likelihood -inf.
    """
    if not (len(prompts) == len(responses) == len(n_tokens)) or not prompts:
        raise ValueError(f"need equal, non-zero counts, got {len(prompts)} / {len(responses)} / {len(n_tokens)}")
    teacher = world.teacher
    correct = [bool(teacher.is_correct(p, r)) for p, r in zip(prompts, responses)]
    lps = [float(teacher.logprob(p, r)) for p, r in zip(prompts, responses)]
    finite = [(lp, n) for lp, n in zip(lps, n_tokens) if math.isfinite(lp)]
    tok = sum(n for _, n in finite)
    return {
        "task_accuracy": float(np.mean(correct)),
        "teacher_logprob_per_token": (sum(lp for lp, _ in finite) / tok) if tok else float("-inf"),
        "teacher_impossible_frac": 1.0 - len(finite) / len(lps),
    }
