import numpy as np
import pytest

from gadx.eval.judge import Judgement
from gadx.eval.metrics import aggregate, bootstrap_ci


def J(s, r):
    return Judgement(r, s, "", 1)


def test_aggregate_known_values():
    js = [J(8, 8), J(6, 8), J(4, 8), Judgement(None, None, "junk", 3)]
    res = aggregate(js, [10, 20, 30, 40], n_boot=200, seed=0)
    assert res.n_prompts == 4 and res.n_judged == 3 and res.n_unparseable == 1
    assert res.score == pytest.approx(100 * 18 / 42)  # 42.857...
    assert res.per_sample_mean == pytest.approx((50 + 100 * 6 / 14 + 100 * 4 / 12) / 3)
    assert res.student_mean == pytest.approx(6.0) and res.reference_mean == pytest.approx(8.0)
    assert res.mean_len_tokens == pytest.approx(25.0)  # over every answer, judged or not
    assert res.ci_low <= res.score <= res.ci_high
    assert res.per_sample_ci_low <= res.per_sample_mean <= res.per_sample_ci_high


def test_parity_and_constant_data_give_degenerate_interval():
    res = aggregate([J(7, 7)] * 10, [5] * 10, n_boot=100)
    assert res.score == 50.0 and res.ci_low == 50.0 and res.ci_high == 50.0


def test_bootstrap_is_seeded_and_matches_normal_approximation():
    rng = np.random.default_rng(1)
    s = rng.integers(1, 11, size=400).astype(float)
    r = rng.integers(1, 11, size=400).astype(float)
    a = bootstrap_ci(s, r, n_boot=2000, seed=3)
    assert a == bootstrap_ci(s, r, n_boot=2000, seed=3)
    assert a != bootstrap_ci(s, r, n_boot=2000, seed=4)
    # per-sample mean: the bootstrap half-width is close to 1.96 * standard error
    x = 100 * s / (s + r)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    lo, hi = a[1]
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert lo < x.mean() < hi


def test_all_unparseable_and_judge_free():
    res = aggregate([Judgement(None, None, "", 3)] * 2, [3, 5])
    assert res.score is None and res.n_unparseable == 2 and res.mean_len_tokens == 4.0
    res = aggregate(None, [3, 5])
    assert res.score is None and res.n_unparseable == 0 and res.n_judged == 0


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="judgements"):
        aggregate([J(1, 1)], [1, 2])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.ones(3), np.ones(3), confidence=1.5)
