"""gadx/eval/table.py: the one formatter behind gadx eval's, gadx.train's and gadx.real's tables."""
import pytest

from gadx.eval.table import table


def test_markdown_and_right_aligned_columns():
    assert table(["model", "acc"], [["G", "0.5"]]) == ["| model | acc |", "|---|---|", "| G | 0.5 |"]
    assert table(["model", "acc"], [["G", "0.5"]], right=[False, True])[1] == "|---|---:|"


def test_text_pads_columns():
    assert table(["judge", "vicuna"], [["G", "7.1"], ["SeqKD", "10.25"]], style="text") == [
        "judge  vicuna", "-------------", "G         7.1", "SeqKD   10.25"]


def test_bad_input():
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        table(["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="'html'"):
        table(["a"], [], style="html")
