"""The six task families of the synthetic world.

Each family knows its finite pool of prompts, how to write and parse a prompt,
the teacher's reply distribution for it (the body; ``teacher.py`` wraps it in
a persona style), a code check of task correctness, and the unit it holds out
for the OOD split (``key``). Prompts map one-to-one onto parameter dicts.

| family   | example prompt                               | OOD hold-out key         |
|----------|----------------------------------------------|--------------------------|
| list     | List 3 fruits. Do not include plum.          | (category, n)            |
| repeat   | Say moon 4 times.                            | (word, n)                |
| spell    | Spell the word tiger backwards.              | (word, direction)        |
| compare  | Which is larger, 42 or 17?                   | unordered operand pair   |
| numwords | Write 42 in words.                           | the number               |
| note     | Write a formal note inviting Anna to dinner. | (tone, purpose)          |

Every hold-out key combines parts that the train split shows separately, so
OOD tests interpolation, never extrapolation.
"""
from __future__ import annotations

import random
import re
from fractions import Fraction

from gadx.world.dist import Node, Perm, choice, seq
from gadx.world.vocab import CATEGORIES, ITEM_CATEGORY, NAMES, TENS, UNITS, WORDS, number_words

Params = dict


def _pattern(template: str, fields: dict[str, str], tail: str = "") -> re.Pattern:
    """A template's ``{field}``s become named groups; ``tail`` is appended raw."""
    parts = re.split(r"\{(\w+)\}", template)
    rx = "".join(re.escape(s) if i % 2 == 0 else f"(?P<{s}>{fields[s]})" for i, s in enumerate(parts))
    return re.compile(rx + tail)


class Family:
    name: str
    templates: tuple[str, ...]
    fields: dict[str, str] = {}
    tail: str = ""

    def __init__(self):
        self._patterns = [_pattern(t, self.fields, self.tail) for t in self.templates]

    def pool(self) -> list[Params]:
        raise NotImplementedError

    def key(self, p: Params) -> tuple:
        raise NotImplementedError

    def key_parts(self, key: tuple) -> tuple:
        """The parts of a hold-out key that train must show (in other keys)."""
        return key

    def choose_holdout(self, keys: list[tuple], rng: random.Random) -> set[tuple]:
        raise NotImplementedError

    def prompt(self, p: Params) -> str:
        raise NotImplementedError

    def _params(self, phrasing: int, g: dict) -> Params | None:
        raise NotImplementedError

    def body(self, p: Params) -> Node:
        raise NotImplementedError

    def is_correct(self, p: Params, response: str) -> bool:
        raise NotImplementedError

    def parse(self, prompt: str) -> Params | None:
        for phrasing, pat in enumerate(self._patterns):
            m = pat.fullmatch(prompt)
            if m is None:
                continue
            try:
                p = self._params(phrasing, m.groupdict())
            except (KeyError, ValueError):
                p = None
            # The round trip rejects prompts that match loosely (e.g. "2" vs "two").
            if p is not None and self.prompt(p) == prompt:
                return p
        return None


N_RANGE = (2, 3, 4, 5)
_NUM = {number_words(n): n for n in N_RANGE}


# ---------------------------------------------------------------- list
class ListFamily(Family):
    """Name n items of a category, optionally excluding one, optionally in a
    requested format. A count the student gets wrong shows as a numbered line
    too many or too few, or a sentence with one item more than asked."""

    name = "list"
    templates = ("Name {n_word} {category}.", "List {n} {category}.", "Give me {n_word} {category}.")
    fields = {"n_word": "[a-z]+", "n": r"\d+", "category": "[a-z]+"}
    tail = r"(?: Do not include (?P<exclude>[a-z]+)\.)?(?P<fmt> Use a numbered list\.| Answer in one sentence\.)?"
    _FMT = {None: "", "numbered": " Use a numbered list.", "sentence": " Answer in one sentence."}

    def pool(self):
        return [
            dict(category=c, n=n, exclude=x, fmt=f, phrasing=ph)
            for c, items in CATEGORIES.items()
            for n in N_RANGE
            for x in (None, *items)
            for f in self._FMT
            for ph in range(len(self.templates))
        ]

    def key(self, p):
        return (p["category"], p["n"])

    def choose_holdout(self, keys, rng):
        # One count per category: every category and every count stays in train.
        counts = list(N_RANGE) * 2
        rng.shuffle(counts)
        return {(c, n) for c, n in zip(CATEGORIES, counts)}

    def prompt(self, p):
        head = self.templates[p["phrasing"]].format(n=p["n"], n_word=number_words(p["n"]), category=p["category"])
        excl = f" Do not include {p['exclude']}." if p["exclude"] else ""
        return head + excl + self._FMT[p["fmt"]]

    def _params(self, phrasing, g):
        n = int(g["n"]) if g.get("n") else _NUM[g["n_word"]]
        fmt = {v.strip(): k for k, v in self._FMT.items() if k}.get((g["fmt"] or "").strip())
        items = CATEGORIES.get(g["category"], ())
        if n not in N_RANGE or not items or (g["exclude"] is not None and g["exclude"] not in items):
            return None
        return dict(category=g["category"], n=n, exclude=g["exclude"], fmt=fmt, phrasing=phrasing)

    def body(self, p):
        n, cat = p["n"], p["category"]
        items = tuple(i for i in CATEGORIES[cat] if i != p["exclude"])
        here = f"Here are {number_words(n)} {cat}: "
        numbered = seq(
            choice((Fraction(1, 2), here, "head=here"), (Fraction(1, 2), "", "head=none")),
            Perm(items, n, lambda t, item: f"{t + 1}. {item}" + ("." if t == n - 1 else " ")),
        )
        sentence = seq(
            choice((Fraction(3, 5), here, "head=here"), (Fraction(2, 5), f"Some {cat} are ", "head=some")),
            Perm(items, n, lambda t, item: item + (", " if t < n - 2 else " and " if t == n - 2 else ".")),
        )
        options = {"numbered": (Fraction(1, 2), numbered, "body=numbered"),
                   "sentence": (Fraction(1, 2), sentence, "body=sentence")}
        if p["fmt"]:
            return choice((1, *options[p["fmt"]][1:]))
        return choice(*options.values())

    def is_correct(self, p, response):
        named = [w for w in re.findall(r"[a-z]+", response.lower()) if w in ITEM_CATEGORY]
        ok = (len(named) == len(set(named)) == p["n"]
              and all(ITEM_CATEGORY[w] == p["category"] for w in named)
              and p["exclude"] not in named)
        if p["fmt"] == "numbered":
            ok &= re.findall(r"(\d+)\. ([a-z]+)", response.lower()) == [(str(i + 1), w) for i, w in enumerate(named)]
        elif p["fmt"] == "sentence":
            ok &= re.search(r"\d", response) is None
        return ok


# ---------------------------------------------------------------- repeat
class RepeatFamily(Family):
    """Repeat a word n times. The teacher's separator and its optional
    "(three times)" note must agree with the repetitions: local checks."""

    name = "repeat"
    templates = ("Repeat the word {word} {n_word} times.", "Say {word} {n} times.", "Write the word {word} {n_word} times.")
    fields = {"word": "[a-z]+", "n_word": "[a-z]+", "n": r"\d+"}

    def pool(self):
        return [dict(word=w, n=n, phrasing=ph) for w in WORDS for n in N_RANGE for ph in range(len(self.templates))]

    def key(self, p):
        return (p["word"], p["n"])

    def choose_holdout(self, keys, rng):
        return set(rng.sample(sorted(keys), len(keys) * 3 // 20))

    def prompt(self, p):
        return self.templates[p["phrasing"]].format(word=p["word"], n=p["n"], n_word=number_words(p["n"]))

    def _params(self, phrasing, g):
        n = int(g["n"]) if g.get("n") else _NUM[g["n_word"]]
        if g["word"] not in WORDS or n not in N_RANGE:
            return None
        return dict(word=g["word"], n=n, phrasing=phrasing)

    def body(self, p):
        w, n = p["word"], p["n"]
        rep = choice((Fraction(3, 5), " ".join([w] * n), "sep=space"), (Fraction(2, 5), ", ".join([w] * n), "sep=comma"))
        return choice(
            (Fraction(1, 2), seq(rep, "."), "body=bare"),
            (Fraction(3, 10), seq("Here it is: ", rep, "."), "body=here"),
            (Fraction(1, 5), seq(rep, f" ({number_words(n)} times)."), "body=count"),
        )

    def is_correct(self, p, response):
        return len(re.findall(rf"\b{p['word']}\b", response.lower())) == p["n"]


# ---------------------------------------------------------------- spell
class SpellFamily(Family):
    """Spell a word forwards or backwards, letters joined by '-' or ' '. The
    reply often echoes the word next to its letters: a copy check a small
    discriminator can make by aligning the two."""

    name = "spell"
    templates = ("Spell the word {word}.", "How do you spell {word}?", "Spell out {word} letter by letter.",
                 "Spell the word {word} backwards.", "Spell {word} in reverse.", "Write {word} backwards, letter by letter.")
    fields = {"word": "[a-z]+"}

    def pool(self):
        return [dict(word=w, phrasing=ph) for w in WORDS for ph in range(len(self.templates))]

    @staticmethod
    def direction(p):
        return "backward" if p["phrasing"] >= 3 else "forward"

    def key(self, p):
        return (p["word"], self.direction(p))

    def choose_holdout(self, keys, rng):
        # 16 words held out in one direction only: the other stays in train.
        return {(w, rng.choice(("forward", "backward"))) for w in rng.sample(WORDS, 16)}

    def prompt(self, p):
        return self.templates[p["phrasing"]].format(word=p["word"])

    def _params(self, phrasing, g):
        return dict(word=g["word"], phrasing=phrasing) if g["word"] in WORDS else None

    def target(self, p):
        return p["word"][::-1] if self.direction(p) == "backward" else p["word"]

    def body(self, p):
        letters = self.target(p)
        spelled = choice(*(
            (Fraction(1, 2), choice((Fraction(7, 10), sep.join(letters), "case=lower"),
                                    (Fraction(3, 10), sep.join(letters.upper()), "case=upper")), f"sep={name}")
            for sep, name in (("-", "dash"), (" ", "space"))
        ))
        echo = p["word"].capitalize() + (" is spelled " if self.direction(p) == "forward" else " backwards is ")
        last = "The letters are " if self.direction(p) == "forward" else "Backwards, the letters are "
        return choice(
            (Fraction(1, 2), seq(echo, spelled, "."), "body=echo"),
            (Fraction(3, 10), seq(spelled, "."), "body=bare"),
            (Fraction(1, 5), seq(last, spelled, "."), "body=letters"),
        )

    def is_correct(self, p, response):
        runs = _letter_runs(response)
        return len(runs) == 1 and runs[0] == self.target(p)


def _letter_runs(text: str) -> list[str]:
    """Maximal runs (2+ letters) of single letters joined by '-', ' ' or ', '."""
    runs, cur = [], []
    for tok in re.findall(r"[A-Za-z]+|[^A-Za-z]+", text):
        if tok.isalpha():
            if len(tok) == 1:
                cur.append(tok.lower())
                continue
        elif tok in ("-", " ", ", ") and cur:
            continue
        if len(cur) >= 2:
            runs.append("".join(cur))
        cur = []
    if len(cur) >= 2:
        runs.append("".join(cur))
    return runs


# ---------------------------------------------------------------- compare
class CompareFamily(Family):
    """Which of two 2-digit numbers is larger / smaller. The answer repeats an
    operand of the prompt: a number not in the prompt is a visible copy error."""

    name = "compare"
    templates = ("Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?", "Of {a} and {b}, which is larger?",
                 "Which is smaller, {a} or {b}?", "Which number is less: {a} or {b}?", "Of {a} and {b}, which is smaller?")
    fields = {"a": r"\d+", "b": r"\d+"}
    LO, HI = 10, 99

    def pool(self):
        return [dict(a=a, b=b, phrasing=ph)
                for a in range(self.LO, self.HI + 1) for b in range(self.LO, self.HI + 1) if a != b
                for ph in range(len(self.templates))]

    def key(self, p):
        return (min(p["a"], p["b"]), max(p["a"], p["b"]))

    def choose_holdout(self, keys, rng):
        return set(rng.sample(sorted(keys), len(keys) // 10))

    def prompt(self, p):
        return self.templates[p["phrasing"]].format(a=p["a"], b=p["b"])

    def _params(self, phrasing, g):
        a, b = int(g["a"]), int(g["b"])
        ok = a != b and all(self.LO <= v <= self.HI for v in (a, b))
        return dict(a=a, b=b, phrasing=phrasing) if ok else None

    def target(self, p):
        pick = max if p["phrasing"] < 3 else min
        return pick(p["a"], p["b"])

    def body(self, p):
        t = self.target(p)
        o = p["a"] + p["b"] - t
        rel = "larger" if p["phrasing"] < 3 else "smaller"
        return choice(
            (Fraction(2, 5), f"{t} is {rel} than {o}.", "body=than"),
            (Fraction(2, 5), f"The {rel} number is {t}.", "body=the"),
            (Fraction(1, 5), f"{t}.", "body=bare"),
        )

    def is_correct(self, p, response):
        nums = [int(x) for x in re.findall(r"\d+", response)]
        return bool(nums) and nums[0] == self.target(p) and set(nums) <= {p["a"], p["b"]}


# ---------------------------------------------------------------- numwords
_NUMWORD_RX = re.compile(
    r"\b(?:(?:" + "|".join(TENS[2:]) + r")(?:-(?:" + "|".join(UNITS[1:10]) + r"))?|"
    + "|".join(sorted(UNITS, key=len, reverse=True)) + r")\b"
)


class NumwordsFamily(Family):
    """Write a number 1..99 in words. Held-out numbers are compounds whose
    tens word and unit word the train split shows in other numbers."""

    name = "numwords"
    templates = ("Write {x} in words.", "How do you write {x} in words?", "Spell out the number {x}.", "What is {x} in words?")
    fields = {"x": r"\d+"}

    def pool(self):
        return [dict(x=x, phrasing=ph) for x in range(1, 100) for ph in range(len(self.templates))]

    def key(self, p):
        return (p["x"],)

    def key_parts(self, key):
        return divmod(key[0], 10)  # the tens word and the unit word

    def choose_holdout(self, keys, rng):
        compounds = [x for x in range(21, 100) if x % 10]
        return {(x,) for x in rng.sample(compounds, 12)}

    def prompt(self, p):
        return self.templates[p["phrasing"]].format(x=p["x"])

    def _params(self, phrasing, g):
        x = int(g["x"])
        return dict(x=x, phrasing=phrasing) if 1 <= x <= 99 else None

    def body(self, p):
        w = number_words(p["x"])
        return choice(
            (Fraction(2, 5), f"{p['x']} in words is {w}.", "body=is"),
            (Fraction(2, 5), f"{w.capitalize()}.", "body=bare"),
            (Fraction(1, 5), f"It is written {w}.", "body=written"),
        )

    def is_correct(self, p, response):
        return set(_NUMWORD_RX.findall(response.lower())) == {number_words(p["x"])}


# ---------------------------------------------------------------- note
_GREETINGS = {"formal": ((Fraction(1), "Dear {name},", "greet=dear"),),
              "casual": ((Fraction(3, 5), "Hi {name}!", "greet=hi"), (Fraction(2, 5), "Hey {name}!", "greet=hey"))}
_SIGNOFFS = {"formal": ((Fraction(1, 2), "Best regards.", "sign=regards"), (Fraction(1, 2), "Sincerely.", "sign=sincerely")),
             "casual": ((Fraction(1, 2), "Cheers!", "sign=cheers"), (Fraction(1, 2), "See you!", "sign=seeyou"))}
# The core sentence depends on the purpose only, so a held-out (tone, purpose)
# pair is made of a greeting, core and sign-off that train shows elsewhere.
_CORES = {"thank": ((Fraction(3, 5), "Thank you for your help.", "core=a"), (Fraction(2, 5), "Thanks so much for your help.", "core=b")),
          "invite": ((Fraction(3, 5), "Would you like to join us for dinner?", "core=a"), (Fraction(2, 5), "Please come to dinner with us.", "core=b")),
          "congratulate": ((Fraction(3, 5), "Congratulations on your success.", "core=a"), (Fraction(2, 5), "Big congratulations on the new job.", "core=b"))}
_KEYWORD = {"thank": "thank", "invite": "dinner", "congratulate": "congratulations"}
_CORE_NODE = {k: choice(*v) for k, v in _CORES.items()}
_SIGNOFF_NODE = {k: choice(*v) for k, v in _SIGNOFFS.items()}
_PURPOSE_PHRASE = {"thank": "thanking {name}", "invite": "inviting {name} to dinner", "congratulate": "congratulating {name}"}


class NoteFamily(Family):
    """A short formal or casual note to a person. The greeting and the
    sign-off must both match the requested tone and the name must be copied:
    errors sit at the two ends of a ~15-token reply."""

    name = "note"
    templates = ("Write a {tone} note {purpose}.", "Draft a short {tone} message {purpose}.", "Please write a {tone} note {purpose}.")
    fields = {"tone": "formal|casual", "purpose": "[A-Za-z ]+"}
    TONES = ("formal", "casual")

    def pool(self):
        return [dict(name=nm, tone=t, purpose=pu, phrasing=ph)
                for nm in NAMES for t in self.TONES for pu in _CORES for ph in range(len(self.templates))]

    def key(self, p):
        return (p["tone"], p["purpose"])

    def choose_holdout(self, keys, rng):
        return {rng.choice(sorted(keys))}

    def prompt(self, p):
        purpose = _PURPOSE_PHRASE[p["purpose"]].format(name=p["name"])
        return self.templates[p["phrasing"]].format(tone=p["tone"], purpose=purpose)

    def _params(self, phrasing, g):
        words = g["purpose"].split()
        verb = {"thanking": "thank", "inviting": "invite", "congratulating": "congratulate"}[words[0]]
        if len(words) < 2 or words[1] not in NAMES:
            return None
        return dict(name=words[1], tone=g["tone"], purpose=verb, phrasing=phrasing)

    def body(self, p):
        t, name = p["tone"], p["name"]
        greet = choice(*((q, s.format(name=name), lab) for q, s, lab in _GREETINGS[t]))
        return seq(greet, " ", _CORE_NODE[p["purpose"]], " ", _SIGNOFF_NODE[t])

    def is_correct(self, p, response):
        name, tone = p["name"], p["tone"]
        other = "casual" if tone == "formal" else "formal"
        names = set(re.findall(r"\b[A-Z][a-z]+\b", response)) & set(NAMES)
        low = response.lower()
        keywords = {pu for pu, kw in _KEYWORD.items() if kw in low}
        return (names == {name}
                and any(s.format(name=name) in response for _, s, _ in _GREETINGS[tone])
                and not any(s.format(name=name) in response for _, s, _ in _GREETINGS[other])
                and any(s in response for _, s, _ in _SIGNOFFS[tone])
                and not any(s in response for _, s, _ in _SIGNOFFS[other])
                and keywords == {p["purpose"]})


FAMILIES: dict[str, Family] = {f.name: f for f in (
    ListFamily(), RepeatFamily(), SpellFamily(), CompareFamily(), NumwordsFamily(), NoteFamily())}
