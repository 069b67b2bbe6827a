import math
import random

import pytest

from gadx.eval.diagnostics import (
    lcs_length, length_stats, ngram_f1, overlap_metrics, rouge_l_f1, tokenize, world_metrics,
)


def lcs_dp(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.randint(0, 5) for _ in range(rng.randint(0, 70))]  # crosses 64-bit words
        b = [rng.randint(0, 5) for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == lcs_dp(a, b)


def test_hand_computed_examples():
    hyp, ref = "The cat sat on the mat.", "the cat is on the mat"
    # LCS = "the cat on the mat" (5 of 6 tokens each side)
    assert rouge_l_f1(hyp, ref) == pytest.approx(5 / 6)
    assert ngram_f1(hyp, ref, 1) == pytest.approx(5 / 6)
    # bigrams shared: (the cat) (on the) (the mat) = 3 of 5 each side
    assert ngram_f1(hyp, ref, 2) == pytest.approx(3 / 5)
    # clipping: one shared "a"; P = 1/4, R = 1/2
    assert ngram_f1("a a a a", "a b", 1) == pytest.approx(2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2))
    # order matters for ROUGE-L but not unigrams: "c b a" vs "a b c" -> LCS 1
    assert rouge_l_f1("c b a", "a b c") == pytest.approx(1 / 3)
    assert ngram_f1("c b a", "a b c", 1) == 1.0
    assert tokenize("Hello, World! it's 2024") == ["hello", "world", "it", "s", "2024"]
    assert rouge_l_f1("Hello, World!", "hello world") == 1.0
    assert rouge_l_f1("", "x") == 0.0 and ngram_f1("x", "", 2) == 0.0


def test_overlap_metrics_are_percent_means():
    m = overlap_metrics(["a b", "x"], ["a b", "y"])
    assert m == {"rougeL_f1": 50.0, "ngram1_f1": 50.0, "ngram2_f1": 50.0}
    with pytest.raises(ValueError):
        overlap_metrics(["a"], [])


def test_length_stats():
    s = length_stats([1, 2, 3, 4, 100], [True, True, False, True, False])
    assert s["len_mean"] == 22.0 and s["len_p50"] == 3.0 and s["len_max"] == 100.0
    assert s["len_p10"] == pytest.approx(1.4) and s["len_p90"] == pytest.approx(61.6)
    assert s["truncated_frac"] == pytest.approx(0.4)
    assert "truncated_frac" not in length_stats([1])


class _Teacher:
    def is_correct(self, prompt, response):
        return response == prompt.upper()

    def logprob(self, prompt, response):
        return -float("inf") if response == "bad" else -2.0 * len(response)


class _World:
    teacher = _Teacher()


def test_world_metrics_with_a_known_teacher():
    m = world_metrics(_World(), ["ab", "cd", "ef"], ["AB", "cd", "bad"], [2, 4, 1])
    assert m["task_accuracy"] == pytest.approx(1 / 3)
    assert m["teacher_logprob_per_token"] == pytest.approx((-4.0 - 4.0) / (2 + 4))
    assert m["teacher_impossible_frac"] == pytest.approx(1 / 3)
    assert math.isinf(world_metrics(_World(), ["a"], ["bad"], [1])["teacher_logprob_per_token"])


def test_world_metrics_on_the_real_world():
    world_mod = pytest.importorskip("gadx.world")
    if not hasattr(world_mod, "World"):
        pytest.skip("gadx.world has not landed yet")
    world = world_mod.World(seed=0)
    examples = world.split("test_id")[:16]
    rng = random.Random(0)
    replies = [world.teacher.sample(ex.prompt, rng) for ex in examples]
    m = world_metrics(world, [ex.prompt for ex in examples], replies, [max(1, len(r.split())) for r in replies])
    assert m["teacher_impossible_frac"] == 0.0  # the teacher's own samples are possible
    assert math.isfinite(m["teacher_logprob_per_token"]) and m["teacher_logprob_per_token"] <= 0.0
