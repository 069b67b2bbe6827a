"""`gadx eval` exit status: a judge that never parses, or that cannot be reached, is not a success."""
from __future__ import annotations

import json
import socket
import time

import pytest

from gadx.eval import main

pytest.importorskip("gadx.teacher")


def suite(tmp_path, prompts):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    return path


def argv(server_url, judge_url, path, out):
    return ["--teacher-url", server_url, "--teacher-model", "tm", "--suite", str(path), "--judge-url", judge_url,
            "--judge-model", "jm", "--out", str(out), "--bootstrap", "50", "--judge-attempts", "2"]


def test_judge_that_never_parses_exits_1_naming_the_row(fake_server, tmp_path, capsys):
    path = suite(tmp_path, ["Write a haiku. MALFORMED-ALWAYS", "Name a tree. MALFORMED-ALWAYS"])
    assert main(argv(fake_server.url, fake_server.url, path, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "the judge never gave a parseable score for teacher on s (2 prompts, 2 tries each)" in err
    assert (tmp_path / "out" / "results.json").is_file()  # the reports are still written


def test_partly_unparseable_judge_warns_and_exits_0(fake_server, tmp_path, capsys):
    path = suite(tmp_path, ["Write a haiku. MALFORMED-ALWAYS", "Say hi."])
    assert main(argv(fake_server.url, fake_server.url, path, tmp_path / "out")) == 0
    assert "warning: 1 of 2 judge replies for teacher on s never parsed" in capsys.readouterr().err


def test_dead_judge_is_one_line_and_fails_fast(fake_server, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    path = suite(tmp_path, ["Say hi."])
    t0 = time.monotonic()
    assert main(argv(fake_server.url, dead, path, tmp_path / "out")) == 1
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gadx eval: --judge-url {dead}: cannot connect") and len(err.splitlines()) == 1
