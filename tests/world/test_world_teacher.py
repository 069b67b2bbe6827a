"""The synthetic teacher: exact probabilities, correctness checks, corruptions, reply()."""
import math
import random
from fractions import Fraction

import pytest

from gadx.world import SyntheticTeacher, World, count_tokens
from gadx.world.families import FAMILIES
from gadx.world.teacher import FALLBACK

T = SyntheticTeacher(seed=0)


@pytest.fixture(scope="module")
def world():
    return World(seed=0)


def test_every_sampled_reply_is_possible_correct_and_short(world):
    rng = random.Random(0)
    examples = world.split("test_id") + world.split("test_ood") + world.split("train")[:400]
    longest = 0
    for e in examples:
        for temperature in (1.0, 0.7):
            r = world.teacher.sample(e.prompt, rng, temperature)
            lp = world.teacher.logprob(e.prompt, r)
            assert math.isfinite(lp) and lp < 0, (e.prompt, r)
            assert world.teacher.is_correct(e.prompt, r), (e.prompt, r)
            longest = max(longest, len(r))
        assert world.teacher.is_correct(e.prompt, e.answer)
    assert longest <= 160, longest  # ~40 tokens of a ~1000-piece vocabulary


# One small prompt per family and format, so the whole support can be enumerated.
SMALL = ["Name two fruits. Do not include plum. Use a numbered list.", "List 2 tools.",
         "Give me two colors. Do not include red. Answer in one sentence.",
         "Say moon 3 times.", "Spell the word kettle backwards.", "How do you spell owl?",
         "Which is larger, 42 or 17?", "Of 33 and 80, which is smaller?", "Write 42 in words.",
         "What is 7 in words?", "Write a formal note inviting Anna to dinner.",
         "Draft a short casual message thanking Ben."]


@pytest.mark.parametrize("prompt", SMALL)
def test_support_sums_to_one_and_matches_parsing(prompt):
    sup = T.support(prompt)
    assert sum(sup.values()) == 1
    for text, p in sup.items():
        assert T.prob(prompt, text) == p
        assert T.is_correct(prompt, text), text
    assert T.sample(prompt, random.Random(0), temperature=0) in sup


def test_sampling_follows_the_exact_probabilities():
    prompt = "Which is larger, 42 or 17?"
    sup = T.support(prompt)
    rng = random.Random(1)
    n = 20000
    counts = {}
    for _ in range(n):
        r = T.sample(prompt, rng)
        counts[r] = counts.get(r, 0) + 1
    for text, p in sup.items():
        sd = math.sqrt(n * float(p) * (1 - float(p)))
        assert abs(counts.get(text, 0) - n * float(p)) < 5 * sd, text


def test_a_known_reply_has_its_hand_computed_probability():
    # plain style (1/2) x "The larger number is 42." (2/5)
    assert T.prob("Which is larger, 42 or 17?", "The larger number is 42.") == Fraction(1, 5)
    # friendly (3/10) x "Sure!" (3/5) x bare (1/5) x "Have fun!" (1/2)
    assert T.prob("Which is larger, 42 or 17?", "Sure! 42. Have fun!") == Fraction(9, 500)
    # plain (1/2) x numbered (1/2) x no header (1/2) x one of 7*6 ordered pairs
    lp = T.logprob("Name two fruits. Do not include plum.", "1. mango 2. apple.")
    assert lp == pytest.approx(math.log(Fraction(1, 8) / 42), abs=1e-12)


# (prompt, corrupted reply, is_correct expected): every corruption has probability 0.
CORRUPTIONS = [
    # wrong answers
    ("Which is larger, 42 or 17?", "17 is larger than 42.", False),
    ("Which is larger, 42 or 17?", "The larger number is 43.", False),
    ("Say moon 3 times.", "moon moon moon moon.", False),
    ("Spell the word kettle backwards.", "Kettle backwards is e-l-t-e-k.", False),
    ("Write 42 in words.", "Forty two.", False),
    ("Name two fruits. Do not include plum.", "Some fruits are plum and apple.", False),
    ("Name two fruits.", "Some fruits are apple and carrot.", False),
    ("Name two fruits.", "Some fruits are apple and apple.", False),
    ("Write a formal note inviting Anna to dinner.", "Dear Ben, Please come to dinner with us. Sincerely.", False),
    # wrong format / structure
    ("Name two fruits. Answer in one sentence.", "1. apple 2. mango.", False),
    ("Name three fruits. Use a numbered list.", "1. apple 3. mango 2. plum.", False),
    ("Write a formal note inviting Anna to dinner.", "Dear Anna, Please come to dinner with us. Cheers!", False),
    ("Write a casual note thanking Ben.", "Dear Ben, Thank you for your help. Cheers!", False),
    # truncated
    ("Spell the word kettle.", "Kettle is spelled k-e-t-t-l", False),
    ("List 3 tools.", "1. saw 2. rake", False),
    ("Write a casual note thanking Ben.", "Hi Ben! Thank you for your help.", False),
    # phrasing-only errors: task right, impossible for the teacher
    ("Which is larger, 42 or 17?", "Sure! 42. I hope this is useful.", True),  # style mix
    ("Say moon 3 times.", "moon, moon moon.", True),  # separators mixed
    ("Say moon 3 times.", "moon moon moon (four times).", True),  # note disagrees with the count
    ("Spell the word kettle.", "Kettle is spelled k-E-t-t-l-e.", True),  # case mixed
    ("Write 42 in words.", "Forty-two. ", True),  # trailing space
    ("Which is larger, 42 or 17?", "Certainly. 42.", True),  # closing line dropped
]


@pytest.mark.parametrize("prompt,reply,correct", CORRUPTIONS)
def test_corrupted_replies_are_impossible_and_checked(prompt, reply, correct):
    assert T.logprob(prompt, reply) == -math.inf
    assert T.is_correct(prompt, reply) is correct


def test_phrasing_distance_rewards_coverage_not_collapse(world):
    prompts = [e.prompt for e in world.split("test_id")]
    rng = random.Random(0)
    teacher_like = [T.sample(p, rng) for p in prompts]
    collapsed = [T.sample(p, rng, temperature=0) for p in prompts]
    d_teacher = T.phrasing_distance(prompts, teacher_like)
    d_collapsed = T.phrasing_distance(prompts, collapsed)
    assert set(d_teacher) == set(FAMILIES) | {"all"}
    assert d_teacher["all"] < 0.2 < 0.35 < d_collapsed["all"], (d_teacher, d_collapsed)
    # Every collapsed reply is the most likely one: its log-likelihood is higher.
    assert sum(map(T.logprob, prompts, collapsed)) > sum(map(T.logprob, prompts, teacher_like))
    assert T.phrasing_distance(prompts, ["nonsense"] * len(prompts))["all"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        T.phrasing_distance(prompts, collapsed[:-1])


def test_reply_contract():
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Say moon 3 times."},
            {"role": "assistant", "content": "moon moon moon."}, {"role": "user", "content": " Which is larger, 42 or 17? "}]
    text, reason = T.reply(msgs, seed=3)
    assert reason == "stop" and T.is_correct("Which is larger, 42 or 17?", text)
    assert T.reply(msgs, seed=3) == (text, reason)
    assert SyntheticTeacher(seed=0).reply(msgs, seed=3) == (text, reason)
    assert {T.reply(msgs, seed=s)[0] for s in range(40)} == {T.reply(msgs, seed=s)[0] for s in range(40)}
    assert len({T.reply(msgs, seed=s)[0] for s in range(40)}) > 3
    assert T.reply(msgs, temperature=0)[0] == "42 is larger than 17."
    # Without a seed: the teacher's own stream, reproducible from its seed.
    a, b = SyntheticTeacher(seed=5), SyntheticTeacher(seed=5)
    assert [a.reply(msgs)[0] for _ in range(10)] == [b.reply(msgs)[0] for _ in range(10)]


def test_reply_max_tokens_cuts_with_length():
    msgs = [{"role": "user", "content": "Write a formal note congratulating Anna."}]
    full, reason = T.reply(msgs, seed=0)
    assert reason == "stop" and count_tokens(full) > 3
    cut, reason = T.reply(msgs, seed=0, max_tokens=3)
    assert reason == "length" and cut == full[:12] and count_tokens(cut) == 3
    same, reason = T.reply(msgs, seed=0, max_tokens=count_tokens(full))
    assert (same, reason) == (full, "stop")
    with pytest.raises(ValueError, match="max_tokens"):
        T.reply(msgs, max_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        T.reply(msgs, temperature=-1)


def test_reply_to_foreign_text_and_bad_messages():
    assert T.reply([{"role": "user", "content": "What is the meaning of life?"}]) == (FALLBACK, "stop")
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say moon 2 times."}]}]
    assert T.is_correct("Say moon 2 times.", T.reply(parts)[0])
    with pytest.raises(ValueError, match="no user message"):
        T.reply([{"role": "system", "content": "hi"}])
