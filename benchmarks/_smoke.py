"""Benchmark sizes: full by default, tiny when GADX_BENCH_SMOKE=1.

    from _smoke import SMOKE, pick
    P, N = pick(full=(8, 8), smoke=(2, 2))

The default test run (tests/test_benchmarks_smoke.py) runs every bench_*.py once with
GADX_BENCH_SMOKE=1, so a change that breaks a benchmark fails CI. Smoke figures are not
results: conftest.py writes no results file for a smoke session unless GADX_BENCH_OUT is set,
and marks the file "smoke" when it does.
"""
import os

SMOKE = os.environ.get("GADX_BENCH_SMOKE") == "1"


def pick(*, full, smoke):
    return smoke if SMOKE else full
