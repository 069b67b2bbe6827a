"""Cost of a reply from its reported usage.

Prices are USD per million tokens for (input, cached input, output). The table
holds list prices as published by the provider when this file was written;
pass `prices=Price(...)` to `TeacherClient` for anything else (a self-hosted
server costs nothing, which is the default for unknown models).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            uncached * self.input_per_mtok
            + cached_tokens * self.cached_input_per_mtok
            + completion_tokens * self.output_per_mtok
        ) / 1e6


# Longest matching prefix wins, so "gpt-4o-mini" is found before "gpt-4o".
PRICES: dict[str, Price] = {
    "gpt-5-chat": Price(1.25, 0.125, 10.0),
    "gpt-5-mini": Price(0.25, 0.025, 2.0),
    "gpt-5-nano": Price(0.05, 0.005, 0.4),
    "gpt-5": Price(1.25, 0.125, 10.0),
    "gpt-4.1-mini": Price(0.4, 0.1, 1.6),
    "gpt-4.1-nano": Price(0.1, 0.025, 0.4),
    "gpt-4.1": Price(2.0, 0.5, 8.0),
    "gpt-4o-mini": Price(0.15, 0.075, 0.6),
    "gpt-4o": Price(2.5, 1.25, 10.0),
}

FREE = Price()


def price_for(model: str) -> Price:
    """The table entry whose name is the longest prefix of `model`; FREE when none matches."""
    best = ""
    for name in PRICES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return PRICES[best] if best else FREE
