"""Kill after step k, resume from the checkpoint: the metrics equal an uninterrupted run's."""
import pytest

from runs import rows, train


@pytest.mark.slow  # three tiny runs, ~40 s alone, more on a loaded machine
def test_resume_equals_uninterrupted(tmp_path, tiny_args):
    train(tmp_path / "a", tiny_args)
    train(tmp_path / "b", tiny_args, "run.checkpoint_every=1", "run.max_steps=4")
    assert len(rows(tmp_path / "b" / "gad" / "metrics.jsonl")) == 4
    train(tmp_path / "b", tiny_args, "run.checkpoint_every=1")
    assert rows(tmp_path / "b" / "gad" / "metrics.jsonl") == rows(tmp_path / "a" / "gad" / "metrics.jsonl")
