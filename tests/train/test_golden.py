"""Golden-loss regression for a tiny deterministic GAD run.

Regenerate (only after an intended numerical change, and say so in the commit):
    GADX_REGEN_GOLDEN=1 python -m pytest tests/train/test_golden.py
"""
import json
import os
from pathlib import Path

import pytest

from runs import rows, train

GOLDEN = Path(__file__).with_name("golden_losses.json")


def test_golden_losses(tmp_path, tiny_args):
    train(tmp_path, tiny_args)
    got = [{k: r[k] for k in ("step", "stage", "loss/g_ce", "loss/d", "loss/g_pg", "kl") if k in r}
           for r in rows(tmp_path / "gad" / "metrics.jsonl")]
    if os.environ.get("GADX_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert [g["stage"] for g in got] == [w["stage"] for w in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            if isinstance(g[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (g["step"], k)
