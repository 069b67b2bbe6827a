"""The synthetic instruction world: prompts, splits, teacher, tokenizer corpus.

    from gadx.world import World
    world = World(seed=0)                      # train 2000, test_id 200, test_ood 200
    train = world.split("train")               # list[Example]
    reply = world.teacher.sample(train[0].prompt, random.Random(0))
    world.teacher.logprob(train[0].prompt, reply), world.teacher.is_correct(train[0].prompt, reply)
    texts = world.corpus()                     # for a small sentencepiece tokenizer

Splits, per family (families.py):
- every family picks, from the world seed, a set of hold-out keys (an
  operand pair, a (word, n) pair, a (tone, purpose) combination, ...) whose
  parts all occur in other keys;
- prompts with a held-out key form the OOD pool, the rest the ID pool;
- train and test_id are disjoint draws from the ID pool (test_id = unseen
  prompts of seen kinds), test_ood a draw from those OOD prompts whose key
  parts the train draw shows.
Each split is shuffled across families. The world seed changes the splits,
never the teacher.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from gadx.world.families import FAMILIES
from gadx.world.teacher import PERSONA_TEXTS, SyntheticTeacher
from gadx.world.vocab import CATEGORIES, NAMES, WORDS, number_words

SPLITS = ("train", "test_id", "test_ood")
DEFAULT_WEIGHTS = {"list": 0.2, "repeat": 0.15, "spell": 0.15, "compare": 0.2, "numwords": 0.1, "note": 0.2}


@dataclass(frozen=True)
class Example:
    prompt: str
    family: str
    answer: str  # the teacher's temperature-0 reply (likeliest option at every choice): a valid reference
    meta: dict = field(hash=False, compare=False)  # the family's parameters


class World:
    def __init__(self, seed: int = 0, *, n_train: int = 2000, n_test_id: int = 200, n_test_ood: int = 200,
                 family_weights: dict[str, float] | None = None):
        weights = dict(DEFAULT_WEIGHTS if family_weights is None else family_weights)
        unknown = set(weights) - set(FAMILIES)
        if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"family_weights must map some of {sorted(FAMILIES)} to non-negative weights, got {weights}")
        for name, n in (("n_train", n_train), ("n_test_id", n_test_id), ("n_test_ood", n_test_ood)):
            if n < 0:
                raise ValueError(f"{name} must be >= 0, got {n}")
        self.seed = seed
        self.teacher = SyntheticTeacher(seed)
        self.holdout: dict[str, set[tuple]] = {}
        sizes = {s: _allocate(n, weights) for s, n in zip(SPLITS, (n_train, n_test_id, n_test_ood))}
        splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
        for name, fam in FAMILIES.items():
            rng = random.Random(f"gadx-world|{seed}|{name}")
            pool = fam.pool()
            keys = [fam.key(p) for p in pool]
            held = self.holdout[name] = fam.choose_holdout(sorted(set(keys)), rng)
            ood = [p for p, k in zip(pool, keys) if k in held]
            iid = [p for p, k in zip(pool, keys) if k not in held]
            n_tr, n_id, n_ood = (sizes[s].get(name, 0) for s in SPLITS)
            if n_tr + n_id > len(iid):
                raise ValueError(f"family {name!r} has {len(iid)} in-distribution prompts, asked for "
                                 f"{n_tr} train + {n_id} test_id: lower the split sizes or its weight")
            drawn = rng.sample(iid, n_tr + n_id)
            # OOD only where train shows every part of the held-out key: interpolation.
            seen = {part for p in drawn[:n_tr] for part in enumerate(fam.key_parts(fam.key(p)))}
            ood = [p for p in ood if all(part in seen for part in enumerate(fam.key_parts(fam.key(p))))]
            if n_ood > len(ood):
                raise ValueError(f"family {name!r} has {len(ood)} held-out prompts whose parts train shows, "
                                 f"asked for {n_ood} test_ood: lower the size, raise n_train or the weight")
            for split, params in (("train", drawn[:n_tr]), ("test_id", drawn[n_tr:]), ("test_ood", rng.sample(ood, n_ood))):
                splits[split] += [self._example(name, p) for p in params]
        for s in SPLITS:
            random.Random(f"gadx-world|{seed}|shuffle|{s}").shuffle(splits[s])
        self._splits = splits

    def _example(self, name: str, p: dict) -> Example:
        prompt = FAMILIES[name].prompt(p)
        answer = self.teacher.sample(prompt, random.Random(0), temperature=0)
        return Example(prompt=prompt, family=name, answer=answer, meta=dict(p))

    def split(self, name: str) -> list[Example]:
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return list(self._splits[name])

    def corpus(self, replies_per_prompt: int = 2) -> list[str]:
        """Train prompts, teacher replies to them, and every vocabulary word
        (so test prompts tokenize well without the tokenizer seeing them)."""
        rng = random.Random(f"gadx-world|{self.seed}|corpus")
        texts = []
        for ex in self._splits["train"]:
            texts.append(ex.prompt)
            texts += [self.teacher.sample(ex.prompt, rng) for _ in range(replies_per_prompt)]
        texts.append(" ".join(PERSONA_TEXTS))
        texts += [" ".join(items) for items in CATEGORIES.values()]
        texts += [" ".join(WORDS), " ".join(NAMES), " ".join(number_words(x) for x in range(100)),
                  " ".join(str(x) for x in range(100))]
        return texts

    def teacher_phrasing_distance(self, prompts, responses, kinds=("style", "body")) -> dict[str, float]:
        return self.teacher.phrasing_distance(prompts, responses, kinds)


def _allocate(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of n by weights: the counts sum to n exactly."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[: n - sum(out.values())]:
        out[k] += 1
    return out
