"""`gadx collect` stops without losing or re-buying paid replies, and its exit status means something."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from gadx import collect


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def committed_keys(cache):
    with sqlite3.connect(cache) as db:
        return {k for (k,) in db.execute("SELECT key FROM responses WHERE status = 'ok'")}


def ledger(cache):
    with sqlite3.connect(cache) as db:
        return dict(db.execute("SELECT event, COUNT(*) FROM ledger GROUP BY event").fetchall())


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def n_committed(cache):
    try:
        return len(committed_keys(cache))
    except sqlite3.OperationalError:
        return 0


def spawn(argv):
    # a shell's background job (`pytest ... &`) starts with SIGINT ignored, which Python then keeps: restore it
    return subprocess.Popen([sys.executable, "-m", "gadx.collect", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def setup(fake, tmp_path, n, prefix):
    inp, out, cache = tmp_path / "p.jsonl", tmp_path / "r.jsonl", tmp_path / "c.sqlite"
    write_jsonl(inp, [{"prompt": f"{prefix}{i}"} for i in range(n)])
    argv = ["--input", str(inp), "--output", str(out), "--cache", str(cache), "--base-url", fake.url, "--model", "m",
            "--max-in-flight", "8"]
    return argv, out, cache


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_graceful_stop_commits_in_flight_and_a_rerun_buys_nothing_twice(fake, tmp_path, sig):
    fake.latency = 0.3  # 8 requests are on the wire most of the time
    n = 120
    argv, out, cache = setup(fake, tmp_path, n, "g")
    proc = spawn(argv)
    wait_for(lambda: n_committed(cache) >= 16)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "waiting up to" in err and "re-run" in err
    rows = read_jsonl(out)  # SIGTERM writes the output like Ctrl-C
    assert {r["index"] for r in rows} and all(r["error"] is None for r in rows)
    keys = committed_keys(cache)
    assert len(rows) == len(keys) < n
    # every request that reached the server came back and was committed: nothing was bought and dropped
    assert sum(fake.hits.values()) == len(keys), (sum(fake.hits.values()), len(keys))
    events = ledger(cache)
    assert events.get("abandoned", 0) == 0 and events.get("lost", 0) == 0
    assert collect.main(argv) == 0
    assert len(read_jsonl(out)) == n
    assert sum(fake.hits.values()) == n and max(fake.hits.values()) == 1  # 120 requests for 120 replies


def test_sigkill_in_flight_requests_are_reconciled_as_lost(fake, tmp_path, capsys):
    fake.latency = 0.3
    n = 120
    argv, out, cache = setup(fake, tmp_path, n, "k")
    proc = spawn(argv)
    # kill while requests are on the wire: all 8 of a wave finish together, so right after a wave is
    # committed there is a moment with nothing in flight (a kill there has nothing to reconcile)
    wait_for(lambda: n_committed(cache) >= 16 and sum(fake.hits.values()) > n_committed(cache))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)  # let the server finish answering the dead client's requests
    keys = committed_keys(cache)
    bought_not_received = sum(c for k, c in fake.hits.items() if k not in keys)
    assert 1 <= bought_not_received <= 8
    hits_before = sum(fake.hits.values())
    assert collect.main(argv) == 0
    err = capsys.readouterr().err
    lost = ledger(cache).get("lost", 0)
    # 'send' is committed before a request can leave, so every request that reached the server is counted;
    # at most the few whose 'send' was on disk but whose bytes had not left yet are counted without being bought
    assert bought_not_received <= lost <= 8, (bought_not_received, lost)
    assert f"holds {lost} requests that a killed run left in flight" in err
    assert len(read_jsonl(out)) == n
    assert all(fake.hits[k] == 1 for k in keys)  # nothing committed is bought again
    assert sum(fake.hits.values()) - hits_before == n - len(keys)
    # a third run reconciles nothing new
    assert collect.main(argv) == 0
    assert "killed run" not in capsys.readouterr().err and ledger(cache).get("lost", 0) == lost


RATE = {"kind": "status", "code": 429, "headers": {"retry-after": "0.3"},
        "body": json.dumps({"error": {"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}}
                           ).encode()}


def test_429_forever_shows_what_fails_and_the_deadline_ends_it(fake, tmp_path, capsys):
    for i in range(4):
        fake.script[f"r{i}"] = [RATE] * 10_000
    argv, out, cache = setup(fake, tmp_path, 4, "r")
    t0 = time.monotonic()
    status = collect.main(argv + ["--deadline-s", "2", "--progress-every-s", "0.5", "--drain-s", "1"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert status == 3, err
    assert took < 10
    assert "failing: HTTP 429 rate limit: Rate limit reached for requests" in err
    assert "since" in err and "next retry in" in err
    assert "--deadline-s of 2 s passed" in err and "0 done" in err and "4 not done" in err
    assert read_jsonl(out) == []


def test_429_forever_per_request_timeout_fails_the_requests(fake, tmp_path, capsys):
    for i in range(3):
        fake.script[f"t{i}"] = [RATE] * 10_000
    argv, out, cache = setup(fake, tmp_path, 3, "t")
    assert collect.main(argv + ["--timeout-s", "1"]) == 1
    err = capsys.readouterr().err
    assert "3 failed" in err and "deadline (1.0 s) passed" in read_jsonl(out)[0]["error"]


def test_dead_server_exits_nonzero_with_counts(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inp, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_jsonl(inp, [{"prompt": "a"}, {"prompt": "b"}])
    status = collect.main(["--input", str(inp), "--output", str(out), "--base-url", f"http://127.0.0.1:{port}/v1",
                           "--model", "m", "--timeout-s", "1"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "2 requested: 0 done" in err and "2 failed" in err
    assert all(r["error"] and f"127.0.0.1:{port}" in r["error"] for r in read_jsonl(out))


def test_server_errors_exit_1_and_refused_prompts_can_be_skipped(fake, tmp_path, capsys):
    fake.script["bad"] = [{"kind": "status", "code": 400, "body": b'{"error": {"message": "context length"}}'}]
    inp, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_jsonl(inp, [{"prompt": "fine"}, {"prompt": "bad"}])
    argv = ["--input", str(inp), "--output", str(out), "--base-url", fake.url, "--model", "m"]
    assert collect.main(argv) == 1
    assert "1 done" in capsys.readouterr().err
    assert collect.main(argv + ["--skip-refused"]) == 0  # the refusal is cached: nothing is sent again
    assert "1 skipped" in capsys.readouterr().err
    assert fake.content_hits == {"fine": 1, "bad": 1}


@pytest.mark.parametrize("flags, needle", [
    (["--output", "{tmp}/no/such/dir/r.jsonl"], "no/such/dir"),
    (["--cache", "{tmp}/nope/c.sqlite"], "nope"),
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--max-tokens", "0"], "--max-tokens must be >= 1, got 0"),
    (["--timeout-s", "0"], "--timeout-s must be > 0"),
    (["--top-p", "1.5"], "--top-p must be <= 1"),
])
def test_bad_flags_are_one_line_and_send_nothing(fake, tmp_path, capsys, flags, needle):
    inp = tmp_path / "p.jsonl"
    write_jsonl(inp, [{"prompt": "x"}])
    argv = ["--input", str(inp), "--output", str(tmp_path / "r.jsonl"), "--base-url", fake.url, "--model", "m"]
    argv += [f.format(tmp=tmp_path) for f in flags]
    assert collect.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not fake.hits


def test_synthetic_collect_resumes_from_its_cache(tmp_path, capsys):
    # the in-process synthetic teacher listens on a new port each run; its replies must still be found
    inp, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    from gadx.world import World

    write_jsonl(inp, [{"prompt": e.prompt} for e in World().split("train")[:5]])
    argv = ["--input", str(inp), "--output", str(out), "--synthetic", "--max-tokens", "32"]
    assert collect.main(argv) == 0
    first = read_jsonl(out)
    assert collect.main(argv) == 0
    assert "5 done (5 from cache)" in capsys.readouterr().err
    assert [r["teacher_response"] for r in read_jsonl(out)] == [r["teacher_response"] for r in first]
