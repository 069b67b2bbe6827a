"""Exact string distributions (gadx/world/dist.py): ambiguity, permutations, sampling."""
import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from gadx.world import dist
from gadx.world.dist import Perm, choice, seq


def test_ambiguous_derivations_are_summed():
    # "ab" arises as "a"+"b" and as "ab"+"": both derivations count.
    node = seq(choice((Fraction(1, 2), "a", "x=1"), (Fraction(1, 2), "ab", "x=2")),
               choice((Fraction(1, 3), "b", "y=1"), (Fraction(2, 3), "", "y=2")))
    assert dist.prob(node, "ab") == Fraction(1, 6) + Fraction(1, 3)
    assert dist.parses(node, "ab") == {("x=1", "y=1"): Fraction(1, 6), ("x=2", "y=2"): Fraction(1, 3)}
    assert dist.prob(node, "abb") == Fraction(1, 6)
    assert dist.prob(node, "b") == 0
    assert sum(dist.support(node).values()) == 1


def test_perm_with_prefix_items_matches_enumeration():
    # "pea" is a prefix of "pear": matching must try both.
    node = Perm(("pea", "pear", "r"), 2, lambda t, item: item + ("," if t == 0 else ""))
    sup = dist.support(node)
    assert sum(sup.values()) == 1 and len(sup) == 6
    for text, p in sup.items():
        assert dist.prob(node, text) == p
    assert dist.prob(node, "pea,pea") == 0  # without replacement


def test_signature_dist_is_the_marginal_of_support_parses():
    node = seq(choice((Fraction(1, 4), "a", "k=a"), (Fraction(3, 4), "b", "k=b")), " ",
               Perm(("x", "y", "z"), 2, lambda t, item: item))
    marg = Counter()
    for text, p in dist.support(node).items():
        for sig, q in dist.parses(node, text).items():
            marg[sig] += q
    assert dict(marg) == dist.signature_dist(node) == {("k=a",): Fraction(1, 4), ("k=b",): Fraction(3, 4)}


def test_sampling_frequencies_match_exact_probabilities():
    node = seq(choice((Fraction(1, 5), "A", None), (Fraction(4, 5), "B", None)),
               Perm(("x", "y", "z"), 2, lambda t, item: item))
    sup = dist.support(node)
    rng = random.Random(0)
    n = 20000
    counts = Counter(dist.sample(node, rng) for _ in range(n))
    assert set(counts) <= set(sup)
    for text, p in sup.items():
        sd = math.sqrt(n * float(p) * (1 - float(p)))
        assert abs(counts[text] - n * float(p)) < 5 * sd, (text, counts[text], n * float(p))


def test_temperature_zero_is_greedy_and_low_temperature_sharpens():
    node = choice((Fraction(1, 5), "rare", None), (Fraction(4, 5), "common", None))
    assert dist.sample(node, random.Random(0), temperature=0) == "common"
    rng = random.Random(0)
    cold = sum(dist.sample(node, rng, temperature=0.3) == "rare" for _ in range(4000)) / 4000
    # (1/5)^(1/0.3) / ((1/5)^(1/0.3) + (4/5)^(1/0.3)) ~= 0.0098
    assert cold < 0.03


def test_choice_rejects_probabilities_not_summing_to_one():
    with pytest.raises(AssertionError):
        choice((Fraction(1, 2), "a", None), (Fraction(1, 3), "b", None))
