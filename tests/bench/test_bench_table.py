"""The results writer (benchmarks/results.py) and the table renderer (tools/bench_table.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tools"))
import bench_table  # noqa: E402
import results  # noqa: E402


@pytest.fixture
def res(monkeypatch):
    monkeypatch.delenv("GADX_BENCH_SMOKE", raising=False)
    r = results.Results("demo", rounds=5, threads=2)
    r.row("peer step", [2.0, 4.0, 3.0, 3.5, 2.5], unit="s", cpu_times=[4.0, 4.0, 5.0, 6.0, 6.0])
    r.row("ours step", [1.0, 1.5, 2.0, 1.2, 1.1], unit="s", cpu_times=[2.0, 3.0, 4.0, 4.0, 5.0],
          baseline="peer step", goal=1.5, goal_on="cpu")
    r.row("ours tok/s", [10.0, 30.0, 20.0], unit="tok/s")
    r.row("peer tok/s", [5.0, 5.0, 8.0], unit="tok/s", baseline="ours tok/s", higher_is_better=True, goal=1.0)
    return r


def test_rows_are_medians_with_ratios_and_goals(res):
    peer, ours, tput, peer_tput = res.rows
    assert (peer["median"], peer["min"], peer["max"]) == (3.0, 2.0, 4.0)
    assert peer["ratio_vs_baseline"] is None and peer["goal_met"] is None
    assert ours["median"] == 1.2 and ours["cpu_time_median"] == 4.0
    assert ours["ratio_vs_baseline"] == pytest.approx(3.0 / 1.2)  # a time: baseline / row
    assert ours["ratio_cpu_vs_baseline"] == pytest.approx(5.0 / 4.0)
    assert ours["goal_met"] is False  # judged on CPU time (1.25x < 1.5x), not on wall (2.5x)
    assert peer_tput["ratio_vs_baseline"] == pytest.approx(5.0 / 20.0)  # a throughput: row / baseline
    assert peer_tput["goal_met"] is False


def test_row_mistakes_raise(res):
    with pytest.raises(ValueError, match="no row named"):
        res.row("x", [1.0], unit="s", baseline="missing")
    with pytest.raises(ValueError, match="unit"):
        res.row("x", [1.0], unit="ms", baseline="peer step")
    with pytest.raises(ValueError, match="needs a baseline"):
        res.row("x", [1.0], unit="s", goal=2.0)
    with pytest.raises(ValueError, match="at least one"):
        res.row("x", [], unit="s")


def test_file_has_the_schema(res, tmp_path, monkeypatch):
    monkeypatch.setenv("GADX_BENCH_RESULTS", str(tmp_path))
    path = res.write()
    data = json.loads(path.read_text())
    results.validate(data)
    assert path.name == "demo.json" and data["rounds"] == 5 and data["threads"] == 2
    assert isinstance(data["load_avg_1m_before"], float) and isinstance(data["load_avg_1m_after"], float)
    assert data["commit"] and set(data["machine"]) >= {"cpu", "cores", "gpu"} and "torch" in data["versions"]
    assert data["smoke"] is False


def test_where_results_go(monkeypatch, tmp_path):
    monkeypatch.delenv("GADX_BENCH_SMOKE", raising=False)
    monkeypatch.delenv("GADX_BENCH_RESULTS", raising=False)
    assert results.results_dir() is None
    monkeypatch.setenv("GADX_BENCH_RESULTS", "1")
    assert results.results_dir() == results.RESULTS_DIR
    monkeypatch.setenv("GADX_BENCH_SMOKE", "1")  # smoke figures never land among the committed results
    assert results.results_dir() is None
    monkeypatch.setenv("GADX_BENCH_RESULTS", str(tmp_path))
    assert results.results_dir() == tmp_path


def test_table_renders_every_row_with_met_marks(res, tmp_path):
    res.write(tmp_path)
    md = bench_table.render(tmp_path)
    assert "commit " + res.data["commit"] in md and "5 rounds" in md and "2 threads" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| ours step")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells == ["ours step", "1.20", "1.00-2.00", "s", "4.00", "peer step", "2.50x (CPU 1.25x)", ">= 1.5x CPU",
                     "**not met**"]
    assert md.count("| peer tok/s |") == 1 and "0.250x" not in md


def test_update_and_check_markdown(res, tmp_path):
    res.write(tmp_path)
    md = tmp_path / "doc.md"
    md.write_text("# Doc\nbefore\n<!-- bench_table: demo -->\nhand-typed stale table\n<!-- /bench_table -->\nafter\n")
    tool = [sys.executable, str(ROOT / "tools" / "bench_table.py"), "--dir", str(tmp_path)]
    assert subprocess.run([*tool, "--check", str(md)], capture_output=True).returncode == 1
    assert subprocess.run([*tool, "--update", str(md)], capture_output=True).returncode == 0
    text = md.read_text()
    assert "hand-typed" not in text and "| ours step | 1.20 |" in text
    assert text.startswith("# Doc\nbefore\n") and text.endswith("<!-- /bench_table -->\nafter\n")
    assert subprocess.run([*tool, "--check", str(md)], capture_output=True).returncode == 0
    assert bench_table.update_text(text, tmp_path) == text  # idempotent
    missing = bench_table.update_text("<!-- bench_table: nothing -->\n<!-- /bench_table -->\n", tmp_path)
    assert "No results file yet: `python tools/bench_all.py nothing`" in missing


def test_invalid_file_is_refused(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"benchmark": "bad", "rows": []}))
    with pytest.raises(ValueError, match="lacks"):
        bench_table.load(tmp_path)
