"""tools/verdict_table.py: the baseline is SeqKD's best (arm, temperature) per seed and split, and every arm is
compared with it per prompt."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

TEMPS = ("1.0", "0.8", "0.6", "0.0")


def _eval(valid_by_t: dict[str, list[float]]) -> dict:
    return {"splits": {s: {t: {"valid": sum(v) / len(v), "per_prompt_valid": v} for t, v in valid_by_t.items()}
                       for s in ("test_id", "test_ood")}}


def _write(folder: Path, seed: int, arm: str, valid_by_t: dict) -> None:
    (folder / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    (folder / f"seed{seed}" / f"{arm}.json").write_text(json.dumps(_eval(valid_by_t)))


def test_baseline_is_the_best_lr_and_temperature_and_differences_are_paired(tmp_path):
    from verdict_table import best_baseline, table

    low = {t: [0.0, 0.0, 1.0, 0.0] for t in TEMPS}
    high = {**low, "0.6": [1.0, 1.0, 0.0, 0.0]}  # the lr-2 SeqKD at T=0.6 is the best baseline: 0.5
    arm = {t: [1.0, 1.0, 1.0, 1.0] for t in TEMPS}
    for s in (0, 1):
        _write(tmp_path, s, "seqkd_a", low)
        _write(tmp_path, s, "seqkd_b", high)
        _write(tmp_path, s, "gad", arm)
    evals = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "seed0").glob("*.json")}
    assert best_baseline(evals, ["seqkd_a", "seqkd_b"], "test_id") == ("seqkd_b", "0.6")
    out = table(tmp_path, ["seqkd_a", "seqkd_b"], ["gad"], "0.0")
    row = next(line for line in out.splitlines() if line.startswith("| gad"))
    assert "1.000 / 1.000" in row and row.count("+0.500") == 6  # 1.0 minus the best 0.5: 2 seeds + pooled, 2 splits
    assert "pooled **+0.500 [" in row  # 8 paired prompts: the pooled interval excludes 0, one seed's 4 do not
    assert row.count("; +0.500 [+0.000, +1.000]") == 2
    base = next(line for line in out.splitlines() if line.startswith("| SeqKD best"))
    assert "0.500 / 0.500" in base
    with pytest.raises(ValueError, match="none of the baseline"):
        best_baseline(evals, ["missing"], "test_id")
