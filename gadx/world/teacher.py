"""The synthetic world's stochastic teacher, with exact reply probabilities.

    from gadx.world import SyntheticTeacher
    teacher = SyntheticTeacher(seed=0)
    text = teacher.sample("Say moon 3 times.", random.Random(1))
    teacher.logprob("Say moon 3 times.", text)       # exact natural log, -inf if impossible
    teacher.is_correct("Say moon 3 times.", text)    # task check by code
    teacher.reply([{"role": "user", "content": "Say moon 3 times."}], max_tokens=8)

A reply = persona style wrapped around the family's body (families.py):

- plain (1/2): the body alone;
- friendly (3/10): "Sure!" | "Happy to help!", body, "Hope that helps!" | "Have fun!";
- formal (1/5): "Certainly." | "Of course.", body,
  "Let me know if you need anything else." | "I hope this is useful.".

The opener and the closing line come from the same style: a student that
learns them as independent marginals writes "Sure! ... I hope this is
useful.", which has probability 0 under the teacher and is visible to a small
discriminator that compares the first and last tokens.

Replies hold no newlines, no leading/trailing or double spaces, and only
ASCII, so they survive any sentencepiece round trip unchanged.

``reply`` is what ``gadx serve --synthetic`` calls. Its ``temperature``
tempers each phrasing choice on its own (p ** (1/T), renormalised; 0 picks
the most likely phrasing); ``logprob`` always scores the T=1 teacher.
``max_tokens`` counts 4 characters as a token (``count_tokens``); a longer
reply is cut to 4*max_tokens characters with finish_reason "length".
"""
from __future__ import annotations

import functools
import math
import random
import threading
from collections import defaultdict
from fractions import Fraction
from typing import Iterable, Sequence

from gadx.world import dist
from gadx.world.dist import Node, choice, seq
from gadx.world.families import FAMILIES, Family, Params

CHARS_PER_TOKEN = 4
FALLBACK = "I can only help with the practice tasks of this world."

_OPEN = {"friendly": ((Fraction(3, 5), "Sure!", "open=sure"), (Fraction(2, 5), "Happy to help!", "open=happy")),
         "formal": ((Fraction(1, 2), "Certainly.", "open=certainly"), (Fraction(1, 2), "Of course.", "open=ofcourse"))}
_CLOSE = {"friendly": ((Fraction(1, 2), "Hope that helps!", "close=hope"), (Fraction(1, 2), "Have fun!", "close=fun")),
          "formal": ((Fraction(3, 5), "Let me know if you need anything else.", "close=letmeknow"),
                     (Fraction(2, 5), "I hope this is useful.", "close=useful"))}
STYLE_P = {"plain": Fraction(1, 2), "friendly": Fraction(3, 10), "formal": Fraction(1, 5)}
PERSONA_TEXTS = tuple(s for opts in (*_OPEN.values(), *_CLOSE.values()) for _, s, _ in opts)


_OPEN_NODE = {s: choice(*opts) for s, opts in _OPEN.items()}
_CLOSE_NODE = {s: choice(*opts) for s, opts in _CLOSE.items()}


def persona(body: Node) -> Node:
    wrapped = {s: seq(_OPEN_NODE[s], " ", body, " ", _CLOSE_NODE[s]) for s in _OPEN}
    return choice((STYLE_P["plain"], body, "style=plain"),
                  *((STYLE_P[s], wrapped[s], f"style={s}") for s in _OPEN))


def count_tokens(text: str) -> int:
    """The synthetic teacher's token count: 4 characters a token, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


class SyntheticTeacher:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ prompts
    @staticmethod
    def parse(prompt: str) -> tuple[Family, Params]:
        """The family and parameters of a world prompt; ValueError for any other text."""
        for fam in FAMILIES.values():
            p = fam.parse(prompt)
            if p is not None:
                return fam, p
        raise ValueError(f"not a prompt of the synthetic world: {prompt!r}")

    @functools.lru_cache(maxsize=8192)
    def distribution(self, prompt: str) -> Node:
        fam, p = self.parse(prompt)
        return persona(fam.body(p))

    # ------------------------------------------------------------ the teacher
    def sample(self, prompt: str, rng: random.Random, temperature: float = 1.0) -> str:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        return dist.sample(self.distribution(prompt), rng, temperature)

    def prob(self, prompt: str, response: str) -> Fraction:
        return dist.prob(self.distribution(prompt), response)

    def logprob(self, prompt: str, response: str) -> float:
        p = self.prob(prompt, response)
        return math.log(p) if p > 0 else -math.inf

    def support(self, prompt: str) -> dict[str, Fraction]:
        """Every valid reply with its exact probability (can be large for list prompts)."""
        return dist.support(self.distribution(prompt))

    def is_correct(self, prompt: str, response: str) -> bool:
        fam, p = self.parse(prompt)
        return fam.is_correct(p, response)

    def family(self, prompt: str) -> str:
        return self.parse(prompt)[0].name

    # ------------------------------------------------------------ phrasing coverage
    def phrasing(self, prompt: str, response: str, kinds: Sequence[str] | None = ("style", "body")) -> dict[tuple, float]:
        """Posterior over phrasing signatures of a reply (labels of the kinds
        named; all labels when kinds is None); {("<invalid>",): 1} when the
        teacher could not have written it."""
        parses = dist.parses(self.distribution(prompt), response)
        total = sum(parses.values(), Fraction(0))
        if total == 0:
            return {("<invalid>",): 1.0}
        out: dict[tuple, float] = defaultdict(float)
        for sig, p in parses.items():
            out[_keep(sig, kinds)] += float(p / total)
        return dict(out)

    def phrasing_distance(self, prompts: Sequence[str], responses: Sequence[str],
                          kinds: Sequence[str] = ("style", "body")) -> dict[str, float]:
        """How far the phrasing mix of ``responses`` is from the teacher's on
        the same prompts: per family, the total-variation distance between the
        two distributions of each label kind (e.g. the style: plain / friendly
        / formal), averaged over the kinds the family uses; "all" is the
        prompt-weighted mean. 0 = the teacher's mix, 1 = disjoint (every reply
        invalid). A student that collapses onto the most likely phrasing scores
        high here even when its teacher log-likelihood is good. Finite samples
        give a positive floor: compare with the teacher's own samples on the
        same prompts."""
        if len(prompts) != len(responses) or not prompts:
            raise ValueError(f"need equal, non-zero numbers of prompts and responses, got {len(prompts)} and {len(responses)}")
        got: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))  # (family, kind) -> sig -> mass
        want: dict[tuple, dict] = defaultdict(lambda: defaultdict(float))
        count: dict[str, int] = defaultdict(int)
        for prompt, response in zip(prompts, responses):
            fam = self.family(prompt)
            count[fam] += 1
            for kind in kinds:
                for sig, p in self.phrasing(prompt, response, (kind,)).items():
                    got[fam, kind][sig] += p
                for sig, p in self._phrasing_prior(prompt, (kind,)).items():
                    want[fam, kind][sig] += p
        out = {}
        for fam, n in count.items():
            used = [k for k in kinds if any(want[fam, k].keys() - {()})] or list(kinds)
            tvs = [0.5 * sum(abs(got[fam, k][s] - want[fam, k][s]) for s in got[fam, k].keys() | want[fam, k].keys()) / n
                   for k in used]
            out[fam] = sum(tvs) / len(tvs)
        out["all"] = sum(out[f] * n for f, n in count.items()) / len(prompts)
        return out

    @functools.lru_cache(maxsize=8192)
    def _phrasing_prior(self, prompt: str, kinds: tuple[str, ...] | None) -> dict[tuple, float]:
        out: dict[tuple, float] = defaultdict(float)
        for sig, p in dist.signature_dist(self.distribution(prompt)).items():
            out[_keep(sig, kinds)] += float(p)
        return dict(out)

    # ------------------------------------------------------------ the served API
    def reply(self, messages: list[dict], *, temperature: float = 1.0, max_tokens: int | None = None,
              seed: int | None = None) -> tuple[str, str]:
        """(text, finish_reason) for a chat request; reads the last user
        message. With a seed the reply is a function of (teacher seed, seed,
        prompt); without one it comes from the teacher's own stream. Text
        that is not a world prompt gets a fixed refusal."""
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        prompt = _last_user(messages).strip()
        try:
            node = self.distribution(prompt)
        except ValueError:
            text = FALLBACK
        else:
            if seed is not None:
                text = dist.sample(node, random.Random(f"{self.seed}|{seed}|{prompt}"), temperature)
            else:
                with self._lock:
                    text = dist.sample(node, self._rng, temperature)
        if max_tokens is not None and count_tokens(text) > max_tokens:
            return text[: max_tokens * CHARS_PER_TOKEN], "length"
        return text, "stop"


def _keep(sig: tuple, kinds: Iterable[str] | None) -> tuple:
    if kinds is None:
        return sig
    return tuple(label for label in sig if label.split("=", 1)[0] in kinds)


def _last_user(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            if not isinstance(content, str):
                raise ValueError(f"user message content must be text, got {type(content).__name__}")
            return content
    raise ValueError(f"no user message in {messages!r}")
