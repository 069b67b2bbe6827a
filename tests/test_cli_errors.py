"""Everyday mistakes give one line naming the file or value, and an exit status; --debug / GADX_DEBUG=1
give the traceback."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from gadx import cli


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    # setenv, not delenv: delenv of an absent variable records nothing to undo, so a GADX_DEBUG=1 that
    # run_main exports for child processes would leak into every later test of the session
    monkeypatch.setenv("GADX_DEBUG", "0")


def one_error_line(err: str, prog: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_port_out_of_range(capsys, port):
    with pytest.raises(SystemExit) as e:  # argparse's own one-line error (after the usage line)
        cli.main(["serve", "--echo", "--port", port])
    assert e.value.code == 2
    assert "argument --port: must be" in capsys.readouterr().err


def test_serve_port_in_use(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        status, err = run_cli(capsys, "serve", "--echo", "--port", str(port))
    assert status == 2
    line = one_error_line(err, "gadx serve")
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line


def test_serve_model_that_is_not_a_folder_hints_at_synthetic(capsys):
    status, err = run_cli(capsys, "serve", "--model", "synthetic")
    assert status == 2
    assert "--model synthetic: no such folder (did you mean --synthetic?)" in one_error_line(err, "gadx serve")


@pytest.mark.parametrize("fault", ["no_config", "bad_config", "truncated_weights", "garbage_weights"])
def test_serve_corrupt_model_folder_names_the_file(capsys, tmp_path, fault):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    if fault != "no_config":
        (folder / "config.json").write_text("{not json" if fault == "bad_config" else json.dumps({"model_type": "qwen2"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 64 * 64 * 4]}}).encode()
    weights = len(header).to_bytes(8, "little") + header + b"\0" * 100  # the data stops short
    (folder / "model.safetensors").write_bytes(weights if fault == "truncated_weights" else b"\x00garbage" * 10)
    status, err = run_cli(capsys, "serve", "--model", str(folder))
    assert status == 2
    line = one_error_line(err, "gadx serve")
    expect = "config.json" if fault in ("no_config", "bad_config") else "model.safetensors"
    assert str(folder / expect) in line, line


def test_collect_missing_output_folder(capsys, tmp_path):
    inp = tmp_path / "p.jsonl"
    inp.write_text('{"prompt": "x"}\n')
    status, err = run_cli(capsys, "collect", "--input", str(inp), "--output", str(tmp_path / "nope" / "r.jsonl"),
                          "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert status == 2
    assert f"folder {tmp_path / 'nope'} does not exist" in err and len(err.strip().splitlines()) == 1


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom(argv):
        raise RuntimeError("disk on fire\n   (second line)")

    assert cli.run_main("gadx x", boom, []) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("gadx x: error: RuntimeError: disk on fire (second line) "
                           "(run with --debug or GADX_DEBUG=1 for the traceback)")
    with pytest.raises(RuntimeError):
        cli.run_main("gadx x", boom, ["--debug"])
    assert os.environ["GADX_DEBUG"] == "1"  # passed on to child processes
    monkeypatch.setenv("GADX_DEBUG", "0")
    assert cli.run_main("gadx x", boom, []) == 1


@pytest.mark.parametrize("how", ["flag_first", "flag_last", "env"])
def test_debug_traceback_from_the_command_line(tmp_path, how):
    argv = ["serve", "--model", "synthetic"]
    env = {k: v for k, v in os.environ.items() if k != "GADX_DEBUG"}
    if how == "flag_first":
        argv = ["--debug", *argv]
    elif how == "flag_last":
        argv = [*argv, "--debug"]
    else:
        env["GADX_DEBUG"] = "1"
    proc = subprocess.run([sys.executable, "-m", "gadx", *argv], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "did you mean --synthetic" in proc.stderr
    plain = subprocess.run([sys.executable, "-m", "gadx", "serve", "--model", "synthetic"], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items() if k != "GADX_DEBUG"}, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
