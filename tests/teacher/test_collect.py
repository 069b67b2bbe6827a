"""`gadx collect`: resumable, crash-safe offline collection."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gadx import collect


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_prompts_n_samples_then_resume_sends_nothing(fake, tmp_path, capsys):
    inp, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_jsonl(inp, [{"prompt": f"q{i}", "id": i} for i in range(10)])
    argv = ["--input", str(inp), "--output", str(out), "--base-url", fake.url, "--model", "m", "-n", "3",
            "--max-tokens", "16", "--seed", "5"]
    assert collect.main(argv) == 0
    rows = read_jsonl(out)
    assert len(rows) == 30 and sum(fake.hits.values()) == 30 and len(fake.hits) == 30
    assert {(r["index"], r["sample_index"]) for r in rows} == {(i, s) for i in range(10) for s in range(3)}
    assert all(r["teacher_response"] == f"re: q{r['index']}" and r["error"] is None for r in rows)
    assert collect.main(argv) == 0
    again = read_jsonl(out)
    assert sum(fake.hits.values()) == 30 and all(r["cached"] for r in again)
    assert [r["teacher_response"] for r in again] == [r["teacher_response"] for r in rows]


def test_parquet_content_message_lists(fake, tmp_path):
    inp, out = tmp_path / "p.parquet", tmp_path / "r.parquet"
    rows = [{"content": [{"role": "user", "content": f"m{i}"}], "teacher_response": "old"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), inp)
    assert collect.main(["--input", str(inp), "--output", str(out), "--base-url", fake.url, "--model", "m"]) == 0
    got = pq.read_table(out).to_pylist()
    assert [r["teacher_response"] for r in got] == [f"re: m{i}" for i in range(4)]
    assert got[0]["messages"] == [{"role": "user", "content": "m0"}]


@pytest.mark.parametrize("bad_row", [
    {"messages": [{"role": "robot", "content": "x"}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    {"prompt": ""},
    {"text": "no prompt field"},
])
def test_bad_input_fails_before_any_request(fake, tmp_path, bad_row, capsys):
    inp = tmp_path / "p.jsonl"
    write_jsonl(inp, [{"prompt": "fine"}] * 3 + [bad_row])
    with pytest.raises(ValueError, match="row 3|:4:"):
        collect.read_prompts(inp)
    assert collect.main(["--input", str(inp), "--output", str(tmp_path / "o.jsonl"), "--base-url", fake.url,
                         "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert "gadx collect" in err and ("row 3" in err or ":4:" in err)
    assert not fake.hits and not (tmp_path / "o.jsonl").exists()


def _wait_for_rows(cache, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache.exists():
            try:
                with sqlite3.connect(cache) as db:
                    if db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= n:
                        return
            except sqlite3.OperationalError:  # schema not created yet
                pass
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} rows committed after {timeout} s")


def test_ctrl_c_writes_everything_received(fake, tmp_path):
    fake.latency = 0.05
    inp, out, cache = tmp_path / "p.jsonl", tmp_path / "r.jsonl", tmp_path / "c.sqlite"
    write_jsonl(inp, [{"prompt": f"i{i}"} for i in range(300)])
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored, which Python then keeps: restore it
    proc = subprocess.Popen([sys.executable, "-m", "gadx.collect", "--input", str(inp), "--output", str(out),
                             "--cache", str(cache), "--base-url", fake.url, "--model", "m", "--max-in-flight", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_rows(cache, 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    with sqlite3.connect(cache) as db:
        committed = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    rows = read_jsonl(out)
    # a reply committed while the client was closing may be only in the cache: a re-run picks it up
    assert 20 <= len(rows) <= committed < 300
    assert all(r["teacher_response"] == f"re: i{r['index']}" for r in rows)


def test_sigkill_mid_collection_then_resume(fake, tmp_path):
    fake.latency = 0.05
    inp, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    cache = tmp_path / "cache.sqlite"
    n = 200
    write_jsonl(inp, [{"prompt": f"k{i}"} for i in range(n)])
    argv = ["--input", str(inp), "--output", str(out), "--cache", str(cache), "--base-url", fake.url,
            "--model", "m", "--max-in-flight", "4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gadx.collect", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_rows(cache, 40)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(cache)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    committed = {k for (k,) in db.execute("SELECT key FROM responses WHERE status = 'ok'")}
    ledger_sends = db.execute("SELECT COUNT(*) FROM ledger WHERE event = 'send'").fetchone()[0]
    db.close()
    assert 40 <= len(committed) < n
    assert ledger_sends >= len(committed)
    hits_before = sum(fake.hits.values())

    assert collect.main(argv) == 0
    assert len(read_jsonl(out)) == n
    assert all(fake.hits[k] == 1 for k in committed)  # no committed key was requested again
    # every key not committed at the kill (including the ones then in flight) is asked exactly once more
    assert sum(fake.hits.values()) - hits_before == n - len(committed)
    db = sqlite3.connect(cache)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == n
