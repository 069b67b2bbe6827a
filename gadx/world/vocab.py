"""The world's closed vocabularies: list categories, words, names, number words.

Every list is disjoint from the others and from the words of the teacher's
templates (tests/world checks this), so code can find the task content of a
reply by looking words up, whatever the phrasing around them.
"""
from __future__ import annotations

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
    "animals": ("cat", "dog", "horse", "tiger", "rabbit", "mouse", "sheep", "goat"),
    "vegetables": ("carrot", "potato", "onion", "pepper", "cabbage", "spinach", "celery", "garlic"),
    "tools": ("hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "pliers"),
    "instruments": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello"),
    "sports": ("tennis", "soccer", "hockey", "golf", "rugby", "boxing", "cycling", "rowing"),
    "metals": ("iron", "copper", "gold", "silver", "zinc", "nickel", "cobalt", "titanium"),
}
ITEM_CATEGORY: dict[str, str] = {item: cat for cat, items in CATEGORIES.items() for item in items}

# Nouns to repeat and to spell (3-6 letters).
WORDS: tuple[str, ...] = tuple(
    """moon star river stone cloud bread chair table window garden paper candle
    bottle ladder pocket ticket rocket forest island winter summer market button
    castle dragon engine finger jacket kettle mirror needle planet pillow basket
    bridge camera carpet circle doctor farmer flower hunter jungle kitten lizard
    marble monkey office parrot pencil pirate puzzle ribbon saddle school shadow
    spider sponge statue sugar tunnel turtle valley wallet wizard anchor arrow
    badge beach bucket cactus clock comet crown desk glove honey kite lamp leaf
    magnet nest ocean owl pearl""".split()
)

NAMES: tuple[str, ...] = tuple(
    """Anna Ben Clara David Emma Felix Grace Henry Iris Jack Kate Leo Mia Noah
    Olga Paul Quinn Rosa Sam Tara Umar Vera Will Xena Yusuf Zoe Alice Bruno
    Chloe Dan Eva Frank Gina Hugo Ivy Jon Kim Luca Maya Nina""".split()
)

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(x: int) -> str:
    """0..99 in English words, compounds hyphenated: 42 -> 'forty-two'."""
    if not 0 <= x <= 99:
        raise ValueError(f"number_words covers 0..99, got {x}")
    if x < 20:
        return UNITS[x]
    tens, unit = divmod(x, 10)
    return TENS[tens] + (f"-{UNITS[unit]}" if unit else "")
