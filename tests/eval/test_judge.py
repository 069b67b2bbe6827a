import pytest

from gadx.eval.judge import ClientJudge, parse_scores, render_judge_messages
from gadx.eval.suites import EvalPrompt

# Written out by hand from FastChat's prompt.jsonl (prompt_id 1), not built from the module's constants.
EXPECTED_USER = (
    "[Question]\nWhat is {x}?\n\n"
    "[The Start of Assistant 1's Answer]\nRef says 42.\n\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\nStudent says 41.\n\n[The End of Assistant 2's Answer]\n\n"
    "[System]\n"
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that the order in "
    "which the responses were presented does not affect your judgment.\n\n"
)


def test_judge_prompt_renders_exactly():
    msgs = render_judge_messages("What is {x}?", "Ref says 42.", "Student says 41.")
    assert msgs == [
        {"role": "system", "content": "You are a helpful and precise assistant for checking the quality of the answer."},
        {"role": "user", "content": EXPECTED_USER},
    ]


@pytest.mark.parametrize("text,expected", [
    ("8 7\nbecause", (8.0, 7.0)),
    ("8, 7", (8.0, 7.0)),
    ("  \n\n9 10\nexplanation 3 4", (9.0, 10.0)),
    ("Scores: 8 and 7", (8.0, 7.0)),
    ("score 6;5.", (6.0, 5.0)),
    ("**8.5 9**", (8.5, 9.0)),
    ("## 7 7", (7.0, 7.0)),
    ("Assistant 1: 8, Assistant 2: 7", (8.0, 7.0)),
    ("assistant 1 = 3 assistant 2 = 1", (3.0, 1.0)),
    ("RATINGS: 1 10", (1.0, 10.0)),
])
def test_parse_accepts(text, expected):
    assert parse_scores(text) == expected


@pytest.mark.parametrize("text", [
    "", "   \n ", "8", "8 7 6", "0 7", "8 11", "8/10 7/10", "8/7", "I would give 8 and 7",
    "Assistant 1 is better.\n8 7", "8 seven", "-8 7", "8 7 because", "8.5.1 7",
])
def test_parse_rejects(text):
    assert parse_scores(text) is None


def test_references_are_judge_answers(fake_client):
    prompts = [EvalPrompt("1", [{"role": "user", "content": "Q1"}]), EvalPrompt("2", [{"role": "user", "content": "Q2"}])]
    assert ClientJudge(fake_client).references(prompts) == ["judge-model says: Q1", "judge-model says: Q2"]
    assert all(s["temperature"] == 0.0 for s in fake_client.submits)


def test_score_batch_retries_then_marks_unparseable(fake_client, script):
    judge = ClientJudge(fake_client, max_attempts=3)
    qs = ["q1", "q2", "q3", "q4", "q5"]
    refs = ["r"] * 5
    answers = ["SCORE 9 6", "plain", "SCORE 4 5 MALFORMED-ONCE", "MALFORMED-ALWAYS", "MISSING"]
    out = judge.score_batch(qs, refs, answers)
    assert [(j.student_score, j.reference_score) for j in out] == [
        (9.0, 6.0), (7.0, 8.0), (4.0, 5.0), (None, None), (None, None)]
    assert [j.attempts for j in out] == [1, 1, 2, 3, 3]
    assert out[3].raw.startswith("Assistant 1 is more detailed.")
    # 5 first tries + 3 retries at attempt 1 + 2 at attempt 2, each retry a new sample_index at retry_temperature
    assert script.calls["judge"] == 10
    assert [(s["sample_index"], s["temperature"]) for s in fake_client.submits[5:]] == (
        [(1, 0.7)] * 3 + [(2, 0.7)] * 2)


def test_score_batch_single_attempt_never_guesses(fake_client):
    out = ClientJudge(fake_client, max_attempts=1).score_batch(["q"], ["r"], ["SCORE 3 3 MALFORMED-ONCE"])
    assert not out[0].parsed and out[0].attempts == 1


def test_score_batch_checks_lengths(fake_client):
    with pytest.raises(ValueError, match="lengths differ"):
        ClientJudge(fake_client).score_batch(["q"], ["r", "r"], ["a"])
    with pytest.raises(ValueError, match="max_attempts"):
        ClientJudge(fake_client, max_attempts=0)
