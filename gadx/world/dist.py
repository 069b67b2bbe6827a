"""Finite distributions over strings with exact (rational) probabilities.

A reply distribution is a small tree of four node kinds:

- ``Lit(text)``: always ``text``.
- ``Choice(options)``: one of several sub-trees, each with a ``Fraction``
  probability and an optional phrasing label ``"kind=value"``.
- ``Seq(parts)``: the concatenation of independent parts.
- ``Perm(items, k, render)``: ``k`` distinct items drawn uniformly without
  replacement, in draw order, item ``t`` written as ``render(t, item)``.

Four operations on a tree::

    sample(node, rng, temperature=1.0) -> str
    parses(node, text) -> {signature: probability}   # all derivations of text
    support(node) -> {text: probability}             # enumerate (small trees)
    signature_dist(node) -> {signature: probability}  # phrasing marginal

``parses`` is exact even when two derivations give the same string: it
follows every derivation that matches the text and sums their probabilities,
so P(text) = sum(parses(node, text).values()). A signature is the tuple of
labels of the choices a derivation took; content choices (which items, which
word) carry no label, so a signature names the phrasing only.
"""
from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Union

Sig = tuple[str, ...]


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Choice:
    options: tuple[tuple[Fraction, "Node", str | None], ...]

    def __post_init__(self):
        assert self.options, "empty choice"
        assert all(p > 0 for p, _, _ in self.options), self.options
        assert sum(p for p, _, _ in self.options) == 1, self.options


@dataclass(frozen=True)
class Seq:
    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Perm:
    items: tuple[str, ...]
    k: int
    render: Callable[[int, str], str]

    def __post_init__(self):
        assert 0 < self.k <= len(self.items) == len(set(self.items)), (self.k, self.items)

    @property
    def p_each(self) -> Fraction:
        return Fraction(1, math.perm(len(self.items), self.k))


Node = Union[Lit, Choice, Seq, Perm]


def lit(x: "Node | str") -> "Node":
    return Lit(x) if isinstance(x, str) else x


def seq(*parts: "Node | str") -> Node:
    return Seq(tuple(lit(p) for p in parts))


def choice(*options: tuple) -> Node:
    """``choice((p, node_or_str, label), ...)``; p as a Fraction, int or "a/b" string."""
    return Choice(tuple((p if isinstance(p, Fraction) else Fraction(p), lit(n), label) for p, n, label in options))


# ---------------------------------------------------------------- sampling
def sample(node: Node, rng: random.Random, temperature: float = 1.0) -> str:
    """Draw one string. ``temperature`` tempers every labelled or unlabelled
    choice on its own (p_i ** (1/T), renormalised); 0 takes the most likely
    option (the first on ties) and the first k items of a Perm."""
    out: list[str] = []
    _sample(node, rng, temperature, out)
    return "".join(out)


def _sample(node: Node, rng: random.Random, t: float, out: list[str]) -> None:
    if isinstance(node, Lit):
        out.append(node.text)
    elif isinstance(node, Seq):
        for part in node.parts:
            _sample(part, rng, t, out)
    elif isinstance(node, Choice):
        _sample(_pick(node, rng, t), rng, t, out)
    elif isinstance(node, Perm):
        drawn = node.items[: node.k] if t == 0 else rng.sample(node.items, node.k)
        out.extend(node.render(i, item) for i, item in enumerate(drawn))
    else:
        raise AssertionError(node)


def _pick(node: Choice, rng: random.Random, t: float) -> Node:
    if t == 0:
        best = max(p for p, _, _ in node.options)
        return next(n for p, n, _ in node.options if p == best)
    weights = [float(p) ** (1.0 / t) for p, _, _ in node.options]
    u = rng.random() * sum(weights)
    for w, (_, n, _) in zip(weights, node.options):
        u -= w
        if u < 0:
            return n
    return node.options[-1][1]


# ---------------------------------------------------------------- exact probability
def parses(node: Node, text: str) -> dict[Sig, Fraction]:
    """Probability of every derivation of exactly ``text``, summed per signature."""
    out: dict[Sig, Fraction] = defaultdict(Fraction)
    for (end, sig), p in _match(node, text, 0).items():
        if end == len(text):
            out[sig] += p
    return dict(out)


def prob(node: Node, text: str) -> Fraction:
    return sum(parses(node, text).values(), Fraction(0))


def _match(node: Node, text: str, i: int) -> dict[tuple[int, Sig], Fraction]:
    """{(end, signature): probability} of the derivations of node that read text[i:end]."""
    if isinstance(node, Lit):
        return {(i + len(node.text), ()): Fraction(1)} if text.startswith(node.text, i) else {}
    if isinstance(node, Choice):
        out: dict[tuple[int, Sig], Fraction] = defaultdict(Fraction)
        for p, sub, label in node.options:
            for (end, sig), q in _match(sub, text, i).items():
                out[(end, ((label,) if label else ()) + sig)] += p * q
        return out
    if isinstance(node, Seq):
        frontier: dict[tuple[int, Sig], Fraction] = {(i, ()): Fraction(1)}
        for part in node.parts:
            nxt: dict[tuple[int, Sig], Fraction] = defaultdict(Fraction)
            for (pos, sig), p in frontier.items():
                for (end, sub_sig), q in _match(part, text, pos).items():
                    nxt[(end, sig + sub_sig)] += p * q
            if not nxt:
                return {}
            frontier = nxt
        return frontier
    if isinstance(node, Perm):
        ends: dict[int, int] = defaultdict(int)  # end -> number of matching draws
        _match_perm(node, text, i, 0, frozenset(), ends)
        return {(end, ()): n * node.p_each for end, n in ends.items()}
    raise AssertionError(node)


def _match_perm(node: Perm, text: str, pos: int, t: int, used: frozenset, ends: dict) -> None:
    if t == node.k:
        ends[pos] += 1
        return
    for item in node.items:
        if item in used:
            continue
        piece = node.render(t, item)
        if text.startswith(piece, pos):
            _match_perm(node, text, pos + len(piece), t + 1, used | {item}, ends)


# ---------------------------------------------------------------- enumeration
def support(node: Node) -> dict[str, Fraction]:
    """Every string the tree can produce with its exact probability."""
    out: dict[str, Fraction] = defaultdict(Fraction)
    for text, p in _enumerate(node):
        out[text] += p
    return dict(out)


def _enumerate(node: Node):
    if isinstance(node, Lit):
        yield node.text, Fraction(1)
    elif isinstance(node, Choice):
        for p, sub, _ in node.options:
            for text, q in _enumerate(sub):
                yield text, p * q
    elif isinstance(node, Seq):
        for combo in itertools.product(*(list(_enumerate(part)) for part in node.parts)):
            yield "".join(t for t, _ in combo), math.prod((q for _, q in combo), start=Fraction(1))
    elif isinstance(node, Perm):
        for drawn in itertools.permutations(node.items, node.k):
            yield "".join(node.render(i, item) for i, item in enumerate(drawn)), node.p_each
    else:
        raise AssertionError(node)


def signature_dist(node: Node) -> dict[Sig, Fraction]:
    """Marginal distribution of the phrasing signature."""
    if isinstance(node, (Lit, Perm)):
        return {(): Fraction(1)}
    if isinstance(node, Choice):
        out: dict[Sig, Fraction] = defaultdict(Fraction)
        for p, sub, label in node.options:
            for sig, q in signature_dist(sub).items():
                out[((label,) if label else ()) + sig] += p * q
        return dict(out)
    if isinstance(node, Seq):
        acc: dict[Sig, Fraction] = {(): Fraction(1)}
        for part in node.parts:
            nxt: dict[Sig, Fraction] = defaultdict(Fraction)
            for sig, p in acc.items():
                for sub_sig, q in signature_dist(part).items():
                    nxt[sig + sub_sig] += p * q
            acc = nxt
        return dict(acc)
    raise AssertionError(node)
