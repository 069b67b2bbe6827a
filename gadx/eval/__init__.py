"""`gadx eval`: the GAD paper's LLM-as-judge protocol on real prompt suites, plus judge-free diagnostics.

    gadx eval --model CKPT [--model CKPT2 ...] --suite vicuna --judge-url URL --judge-model gpt-4o --out DIR
    python -m gadx eval --help

Pieces: suites.py (prompt sets), generate.py (greedy student / teacher answers),
judge.py (reference answer + pairwise 1-10 scoring, parsing, retries),
metrics.py (score = 100*sum(s)/(sum(s)+sum(r)), bootstrap intervals),
diagnostics.py (ROUGE-L, n-gram F1, lengths, synthetic-world truth),
runner.py (the loop; ``evaluate_small`` for the trainer), report.py (table, JSON, CSV, PNG).
"""
from gadx.eval.cli import main
from gadx.eval.runner import evaluate_small

__all__ = ["main", "evaluate_small"]
