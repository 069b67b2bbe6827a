"""The SmolLM2 verdict's arithmetic: paired per-prompt differences with bootstrap intervals, distinct-2,
the D check's chance gate, and tools/real_compare.py's results file (one line per seed)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gadx.real.compare import compare, d_check_verdict, format_compare

TOOL = Path(__file__).resolve().parents[2] / "tools" / "real_compare.py"


def _rec(i, ll, finished=True, text="a b c d", rouge=10.0):
    return {"id": f"p{i}", "answer": text, "n_tokens": len(text.split()), "finished": finished,
            "teacher_ll_per_token": ll, "rougeL_vs_teacher": rouge}


def _results(n=30):
    sets = {"heldout_id": n, "ood_vicuna": n}
    recs = {
        # GAD beats SeqKD by exactly 0.5 nats on every prompt; "same" equals SeqKD prompt for prompt
        "SeqKD": {s: [_rec(i, -3.0 - 0.1 * (i % 7)) for i in range(n)] for s in sets},
        "GAD": {s: [_rec(i, -2.5 - 0.1 * (i % 7), finished=i % 2 == 0) for i in range(n)] for s in sets},
        "same": {s: [_rec(i, -3.0 - 0.1 * (i % 7), text="x x x x") for i in range(n)] for s in sets},
        "teacher": {s: [_rec(i, -1.0, rouge=100.0) for i in range(n)] for s in sets},
    }
    return {"sets": sets, "records": recs}


def test_paired_differences_intervals_and_text_metrics():
    c = compare(_results(), n_boot=500)
    assert c["sets"] == {"heldout_id": 30, "ood_vicuna": 30, "all": 60}
    d = c["diffs"]["all"]["GAD"]["teacher_ll_per_token"]
    assert d["mean"] == pytest.approx(0.5) and d["lo"] == pytest.approx(0.5) and d["hi"] == pytest.approx(0.5)
    same = c["diffs"]["heldout_id"]["same"]["teacher_ll_per_token"]
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    fin = c["diffs"]["heldout_id"]["GAD"]["finished"]
    assert fin["mean"] == pytest.approx(-0.5) and fin["lo"] < -0.5 < fin["hi"] < 0  # half unfinished: a real spread
    m = c["metrics"]["heldout_id"]
    assert m["SeqKD"]["distinct2"] == 1.0 and m["same"]["distinct2"] == pytest.approx(1 / 3)  # "x x x x": 1 of 3 bigrams
    assert m["GAD"]["finished"] == 0.5 and m["teacher"]["teacher_ll_per_token"] == -1.0
    assert "teacher" not in c["diffs"]["all"] and "SeqKD" not in c["diffs"]["all"]
    table = format_compare(c)
    assert "+0.500 [+0.500, +0.500] higher" in table and "+0.000 [+0.000, +0.000] no difference" in table


def test_compare_refuses_mismatched_prompts_or_a_missing_baseline():
    r = _results()
    r["records"]["GAD"]["heldout_id"][0]["id"] = "other"
    with pytest.raises(ValueError, match="other prompts"):
        compare(r)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        compare(_results(), baseline="nope")


def test_d_check_gate_needs_two_standard_errors_above_chance():
    curve = [{"pairs": 0, "acc": 0.5, "se": 0.0}, {"pairs": 64, "acc": 0.60, "se": 0.05, "rho_teacher_ll": 0.1}]
    ok, line = d_check_verdict({"d_kind": "implicit", "n_held_pairs": 40, "curve": curve})
    assert not ok and "not clear of chance" in line and "0.600" in line
    curve[-1]["se"] = 0.05 - 1e-6  # 0.60 - 2 x (0.05 - 1e-6) > 0.5
    assert d_check_verdict({"curve": curve})[0]
    assert d_check_verdict({"curve": curve[:1]}) == (False, "the D check has no trained point")


def _tool(*args, cwd=None):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_tool_gates_on_the_d_check_and_appends_one_line_per_seed(tmp_path):
    chance = tmp_path / "chance.json"
    chance.write_text(json.dumps({"curve": [{"pairs": 32, "acc": 0.55, "se": 0.06}]}))
    r = _tool("--d-check", chance)
    assert r.returncode == 1 and "not clear of chance" in r.stdout
    clear = tmp_path / "clear.json"
    clear.write_text(json.dumps({"curve": [{"pairs": 128, "acc": 0.97, "se": 0.02}]}))
    assert _tool("--d-check", clear).returncode == 0

    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results()))
    timing = tmp_path / "timing.txt"
    timing.write_text("gadx real run in x\nseqkd done 117 s  load: 1.0 1.0 1.0\ngad done 4000 s  load: 1.0 1.0 1.0\n"
                      "gadx real run in x (restarted)\nprepared 1 s  load: 1.0 1.0 1.0\neval done 321 s  load: 1.0 1.0 1.0\n")
    book = tmp_path / "results_smollm2.jsonl"
    for seed in (0, 1):
        r = _tool("--results", res, "--out", tmp_path / f"s{seed}" / "compare", "--append", book, "--seed", seed,
                  "--timing", timing, "--d-check", clear)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"s{seed}" / "compare.png").stat().st_size > 0
    lines = [json.loads(x) for x in book.read_text().splitlines()]
    assert [x["seed"] for x in lines] == [0, 1] and lines[0]["wall_s"] == 4321
    assert lines[0]["d_check"]["clear_of_chance"] is True
    assert lines[1]["compare"]["diffs"]["all"]["GAD"]["teacher_ll_per_token"]["mean"] == pytest.approx(0.5)
    s = _tool("--summary", book)
    assert s.returncode == 0 and "2 seed(s)" in s.stdout and s.stdout.count("+0.500 [+0.500, +0.500]") == 6
    bad = _tool("--results", res)
    assert bad.returncode == 2 and "go together" in bad.stderr


def test_several_temperatures_compare_against_the_baseline_at_its_best():
    from gadx.real.compare import best_model, merge_temperatures

    greedy, sampled = _results(), _results()
    greedy["temperature"], sampled["temperature"] = 0.0, 0.8
    for s in sampled["sets"]:  # sampled SeqKD is 0.2 nats better than greedy SeqKD on every prompt
        for r in sampled["records"]["SeqKD"][s]:
            r["teacher_ll_per_token"] += 0.2
    merged = merge_temperatures([greedy, sampled])
    assert sorted(merged["records"]) == sorted(["SeqKD@greedy", "GAD@greedy", "same@greedy", "SeqKD@T0.8", "GAD@T0.8",
                                                "same@T0.8", "teacher"])
    assert best_model(merged, "SeqKD") == "SeqKD@T0.8"
    c = compare(merged, baseline="SeqKD@T0.8", n_boot=200)
    assert c["diffs"]["all"]["GAD@greedy"]["teacher_ll_per_token"]["mean"] == pytest.approx(0.3)
    assert "SeqKD@greedy" in c["diffs"]["all"] and "SeqKD@T0.8" not in c["diffs"]["all"]
    with pytest.raises(ValueError, match="own temperature"):
        merge_temperatures([greedy, greedy])
    with pytest.raises(ValueError, match="no model named"):
        best_model(merged, "KD")


def test_distinct2_counts_tokens_when_given_a_tokenizer():
    """A character loop is one word (distinct-2 over words: nan, no bigram) but many tokens: with a
    character split "HHHHH" has 1 distinct bigram of 4."""
    r = _results(4)
    for s in r["sets"]:
        for x in r["records"]["same"][s]:
            x["answer"] = "HHHHH"
    by_word = compare(r, n_boot=50)["metrics"]["heldout_id"]["same"]["distinct2"]
    by_char = compare(r, n_boot=50, split=list)["metrics"]["heldout_id"]["same"]["distinct2"]
    assert by_word != by_word and by_char == pytest.approx(0.25)  # nan by words


def test_tool_splits_by_the_given_tokenizer(tmp_path, world_tok):
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results(4)))
    r = _tool("--results", res, "--out", tmp_path / "c", "--tokenizer", world_tok)
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["distinct2_units"] == "tokens" and 0 < c["metrics"]["all"]["same"]["distinct2"] < 1
