"""World splits: determinism, disjointness, OOD held out as claimed, corpus."""
import re
from collections import Counter

import pytest

from gadx.world import World
from gadx.world.families import FAMILIES
from gadx.world.teacher import PERSONA_TEXTS
from gadx.world.vocab import CATEGORIES, ITEM_CATEGORY, NAMES, WORDS, number_words
from gadx.world.world import DEFAULT_WEIGHTS, SPLITS


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


def test_same_seed_same_world_other_seed_other_splits(world):
    again = World(seed=0)
    for s in SPLITS:
        assert [(e.prompt, e.answer, e.meta) for e in world.split(s)] == [(e.prompt, e.answer, e.meta) for e in again.split(s)]
    assert world.corpus() == again.corpus()
    other = World(seed=1)
    assert [e.prompt for e in other.split("train")] != [e.prompt for e in world.split("train")]
    assert other.holdout != world.holdout


def test_sizes_and_family_mix(world):
    for s, n in zip(SPLITS, (2000, 200, 200)):
        ex = world.split(s)
        assert len(ex) == n
        counts = Counter(e.family for e in ex)
        assert set(counts) == set(DEFAULT_WEIGHTS)
        for fam, w in DEFAULT_WEIGHTS.items():
            assert abs(counts[fam] - n * w) <= 1, (s, fam, counts[fam])


def test_splits_are_disjoint_and_ood_is_held_out(world):
    prompts = {s: [e.prompt for e in world.split(s)] for s in SPLITS}
    for s in SPLITS:
        assert len(set(prompts[s])) == len(prompts[s]), f"duplicate prompts in {s}"
    assert not set(prompts["train"]) & set(prompts["test_id"])
    assert not set(prompts["train"]) & set(prompts["test_ood"])
    assert not set(prompts["test_id"]) & set(prompts["test_ood"])
    for s in SPLITS:
        for e in world.split(s):
            held = FAMILIES[e.family].key(e.meta) in world.holdout[e.family]
            assert held == (s == "test_ood"), (s, e.prompt)


def test_ood_interpolates_every_key_part_is_seen_in_train(world):
    seen = {f: set() for f in FAMILIES}
    for e in world.split("train"):
        fam = FAMILIES[e.family]
        seen[e.family] |= set(enumerate(fam.key_parts(fam.key(e.meta))))
    for e in world.split("test_ood"):
        fam = FAMILIES[e.family]
        for part in enumerate(fam.key_parts(fam.key(e.meta))):
            assert part in seen[e.family], (e.prompt, part)


def test_examples_round_trip_through_the_teacher_parser(world):
    for s in SPLITS:
        for e in world.split(s):
            fam, params = world.teacher.parse(e.prompt)
            assert (fam.name, params) == (e.family, e.meta)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_pool_prompt_parses_to_its_own_family_only(name):
    fam = FAMILIES[name]
    pool = fam.pool()
    for p in pool[:: max(1, len(pool) // 600)]:
        prompt = fam.prompt(p)
        owners = [f.name for f in FAMILIES.values() if f.parse(prompt) is not None]
        assert owners == [name], (prompt, owners)
        assert fam.parse(prompt) == p


def test_prompts_the_world_never_makes_are_rejected(world):
    for bad in ("List 7 fruits.", "Name two planets.", "Say moonx 3 times.", "Which is larger, 5 or 17?",
                "Which is larger, 17 or 17?", "Write 100 in words.", "Write a formal note thanking Bob.",
                "List 3 fruits. Do not include red.", "Spell the word kettle. ", "hello"):
        with pytest.raises(ValueError, match="not a prompt"):
            world.teacher.logprob(bad, "x")


def test_closed_vocabularies_are_disjoint_from_each_other_and_from_the_persona():
    items = set(ITEM_CATEGORY)
    assert len(items) == sum(len(v) for v in CATEGORIES.values())
    words, names = set(WORDS), {n.lower() for n in NAMES}
    numbers = {part for x in range(100) for part in number_words(x).split("-")}
    groups = [items, words, names, numbers, set(CATEGORIES)]
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            assert not a & b, a & b
    # The persona wraps every family: it must hold no content a check could count.
    persona_words = set(re.findall(r"[a-z]+", " ".join(PERSONA_TEXTS).lower()))
    assert not persona_words & (items | words | names | numbers | set(CATEGORIES))
    assert not re.search(r"\d", " ".join(PERSONA_TEXTS))


def test_corpus_covers_train_not_tests(world):
    corpus = world.corpus()
    text = set(corpus)
    assert all(e.prompt in text for e in world.split("train"))
    assert not any(e.prompt in text for e in world.split("test_id") + world.split("test_ood"))
    joined = " ".join(corpus)
    for w in (*WORDS, *NAMES, *ITEM_CATEGORY, *PERSONA_TEXTS):
        assert w in joined


def test_bad_sizes_and_weights_are_value_errors():
    with pytest.raises(ValueError, match="in-distribution prompts"):
        World(seed=0, n_train=5000)
    with pytest.raises(ValueError, match="family_weights"):
        World(seed=0, family_weights={"poetry": 1.0})
    with pytest.raises(ValueError, match="n_test_id"):
        World(seed=0, n_test_id=-1)
    small = World(seed=0, n_train=30, n_test_id=6, n_test_ood=6, family_weights={"compare": 1, "spell": 1})
    assert {e.family for e in small.split("train")} == {"compare", "spell"}
    with pytest.raises(ValueError, match="unknown split"):
        small.split("valid")
