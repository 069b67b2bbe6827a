"""metrics.jsonl: each step once after a resume, finite numbers or null (and the plot copes),
and a progress bar that prints plain lines when its stream is not a terminal."""
import io
import json
import math
import time

import pytest
import torch

from gadx.train.metrics import MetricsLogger, Progress


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_resume_drops_the_rows_it_replays(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for s in range(6):
        log.log(s, {"loss": float(s)})
    log.close()
    # killed after step 5; the last checkpoint was after step 2 (resume_step 3): steps 3.. run again
    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    for s in range(3, 8):
        log.log(s, {"loss": float(s)})
    log.close()
    assert _steps(tmp_path / "metrics.jsonl") == list(range(8))


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "x": 1}\n{"step": 1, "x"')
    log = MetricsLogger(tmp_path, tensorboard=False, resume_step=1)
    log.log(1, {"x": 2.0})
    log.close()
    assert _steps(tmp_path / "metrics.jsonl") == [0, 1]


def test_non_finite_values_are_json_null(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    row = log.log(0, {"a": float("-inf"), "b": torch.tensor(float("nan")), "c": 1.5, "d": torch.tensor([1.0, math.inf])})
    log.close()
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "inf" not in text.lower() and "nan" not in text.lower()
    back = json.loads(text)  # strict JSON
    assert back["a"] is None and back["b"] is None and back["c"] == 1.5 and back["d"] == [1.0, None]
    assert row["a"] is None


def test_plot_keeps_a_panel_with_nulls(tmp_path):
    pytest.importorskip("matplotlib")
    from gadx.train import curves as mod  # tools/plot_curves.py is its command line

    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"step": s, "loss/d": None if s == 1 else 0.5 / (s + 1)}) + "\n" for s in range(4)))
    assert mod.plotted_points([f], "loss/d") == {str(tmp_path): [(0, 0.5), (2, 0.5 / 3), (3, 0.125)]}
    mod.plot([f], tmp_path / "c.png", ("loss/d",))
    assert (tmp_path / "c.png").stat().st_size > 0


def test_progress_prints_plain_lines_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False, like a cluster's log file
    bar = Progress(500, "gad", stream=out, log_interval_s=0.05)
    t0 = time.monotonic()
    for _ in range(500):
        bar.update(1, **{"loss/d": 0.5})
        if time.monotonic() - t0 < 0.2:
            time.sleep(0.001)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 2 <= len(lines) < 100, len(lines)  # rate-limited, not one per step
    assert lines[-1].startswith("gad 500/500") and "loss/d=0.5" in lines[-1]


def test_progress_redraws_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = Progress(3, "gad", stream=out)
    for _ in range(3):
        bar.update(1)
    assert out.getvalue().count("\r") == 3 and out.getvalue().endswith("\n")
