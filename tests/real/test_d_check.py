"""The D check (issue 20, item 2): its metrics on hand-built cases, and the tool end to end on tiny random models.

    pytest tests/real/test_d_check.py      # seconds; no SmolLM2 weights
"""
import json
import math
import sys
from pathlib import Path

import pytest

from gadx.real.d_metrics import pair_credit, pairwise_accuracy, spearman

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def test_pair_credit_counts_ties_and_identical_replies_as_half():
    assert pair_credit(2.0, 1.0) == 1.0 and pair_credit(1.0, 2.0) == 0.0 and pair_credit(1.0, 1.0) == 0.5
    assert pair_credit(5.0, 1.0, same=True) == 0.5  # the same text cannot be told apart, whatever the scores


def test_pairwise_accuracy_and_its_prompt_clustered_error_by_hand():
    # prompt a: credits 1, 1; prompt b: 0, 1/2 (a tie); prompt c: 1, 0 -> acc = 3.5 / 6
    t = [2, 3, 0, 1, 5, 0]
    s = [1, 1, 1, 1, 4, 1]
    acc, se = pairwise_accuracy(t, s, ["a", "a", "b", "b", "c", "c"])
    assert acc == pytest.approx(3.5 / 6)
    # cluster residual sums: a 2 - 2acc, b 0.5 - 2acc, c 1 - 2acc; se^2 = G/(G-1) sum e_g^2 / N^2
    e = [2 - 7 / 6, 0.5 - 7 / 6, 1 - 7 / 6]
    assert se == pytest.approx(math.sqrt(1.5 * sum(x * x for x in e) / 36))
    # one pair per prompt: the clustered error is the usual sqrt(n/(n-1) * p(1-p) / n)
    acc1, se1 = pairwise_accuracy([1, 1, 0, 1], [0, 0, 1, 0], [0, 1, 2, 3])
    assert acc1 == 0.75 and se1 == pytest.approx(math.sqrt(4 / 3 * 0.75 * 0.25 / 4))
    # clustering matters: the same credits, two prompts of two pairs each, perfectly correlated within
    _, se2 = pairwise_accuracy([1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1])
    _, se4 = pairwise_accuracy([1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 2, 3])
    assert se2 > se4
    assert pairwise_accuracy([1, 1], [0, 0], [0, 1], [True, False])[0] == 0.75
    with pytest.raises(ValueError, match="equally long"):
        pairwise_accuracy([1, 2], [1], [0, 1])


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # ranks (1,2,3) vs (1,3,2): 1 - 6*2/(3*8)
    # ties take their mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> Pearson = sqrt(3)/2
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="spearman"):
        spearman([1], [1])


@pytest.mark.timeout(600)
def test_d_check_tool_runs_on_tiny_random_models(tmp_path, world_tok):
    """real_d_check.py end to end on a tiny random student and teacher (served over the OpenAI API):
    pairs, the implicit D's curve on all held-out pairs, the Spearman diagnostic, and a reuse of the pairs."""
    from tiny_models import save_student

    from gadx.serve import CheckpointBackend, start_in_thread
    from gadx.tokenizer import load_tokenizer

    tok = load_tokenizer(world_tok)
    student = save_student(tmp_path / "student", tok, seed=1)
    teacher = save_student(tmp_path / "teacher", tok, seed=2)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 6), ("heldout_id", 3)):
        with (data / f"{split}.jsonl").open("w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"{split}-{i}", "messages": [{"role": "user", "content": f"tell me about {i}"}]}) + "\n")
    sys.path.insert(0, str(TOOLS))
    import real_d_check

    out = tmp_path / "d"
    with start_in_thread(CheckpointBackend(str(teacher), max_batch=8)) as server:
        argv = ["--student", str(student), "--teacher", str(teacher), "--data", str(data), "--out", str(out),
                "--base-url", server.url, "--cache", str(tmp_path / "cache.sqlite"), "--teacher-max-tokens", "8",
                "--k", "2", "--held-k", "2", "--max-response-len", "10", "--max-prompt-len", "64",
                "--batch", "4", "--micro", "2", "--lr", "1e-3", "--gen-batch", "8"]
        assert real_d_check.main(argv) == 0
        res = json.loads((out / "d_check_implicit.json").read_text())
        assert res["n_train_pairs"] == 12 and res["n_held_pairs"] == 6 and res["n_held_prompts"] == 3
        assert [r["pairs"] for r in res["curve"]] == [0, 12]
        first = res["curve"][0]
        assert first["acc"] == 0.5  # D = 0 before any update: every pair is a tie
        assert all(0 <= r["acc"] <= 1 and r["se"] >= 0 for r in res["curve"])
        assert "| 12 |" in (out / "d_check_implicit.md").read_text()
        # the head D reuses the same pairs (no new samples), and starts at a tie too
        assert real_d_check.main(argv + ["--d-kind", "head"]) == 0
    head = json.loads((out / "d_check_head.json").read_text())
    assert head["curve"][0]["acc"] == 0.5 and head["n_held_pairs"] == 6
    with pytest.raises(ValueError, match="not found"):
        real_d_check.main(argv[:5] + [str(tmp_path / "nowhere")] + argv[6:] + ["--out", str(tmp_path / "d2")])
