import json

import pytest

from gadx.train.config import load_config


@pytest.mark.slow  # before / warmup / SeqKD, GAD and oracle arms and their evals: ~90 s here under load
def test_tiny_compare_run_end_to_end(tmp_path, tiny_args):
    from gadx.train.run import train_all

    cfg, _ = load_config(tiny_args(tmp_path))
    assert train_all(cfg) == 0
    # plan=compare: warmup + gate once (warmup/), then each arm from its end (gad/ holds the GAD steps)
    rows = [json.loads(l) for l in (tmp_path / "warmup" / "metrics.jsonl").read_text().splitlines()]
    rows += [json.loads(l) for l in (tmp_path / "gad" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["warmup"] * 3 + ["gad"] * 2
    assert (tmp_path / "results.md").is_file()
