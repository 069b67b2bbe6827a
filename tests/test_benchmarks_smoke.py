"""Every benchmark runs once at smoke size in the default test run, so a change that breaks one fails CI.

One pytest subprocess runs all of benchmarks/bench_*.py with GADX_BENCH_SMOKE=1 (tiny sizes,
benchmarks/_smoke.py) and writes a JUnit report; one test per benchmark file then reads its
outcome. A subprocess rather than collecting benchmarks/ here because the benchmarks
are meant to run as `pytest benchmarks/...` from a shell: their own conftest (the results
writer), no TRITON_INTERPRET (they time the torch kernel path), their sys.path imports of
_models/_smoke, and process-global state (megatron parallel state, torch threads) that must
not leak into the unit tests. One subprocess, not one per file: pytest + torch start-up is
seconds on a loaded 2-core machine. Loopback only: the teacher benchmark serves on 127.0.0.1,
the hub is off (HF_HUB_OFFLINE=1).

A benchmark passes here when its tests pass, or skip only because an optional peer (TRL,
datasets, openai, transformers) is not installed; gadx's side still runs in those cases.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_FILES = sorted((ROOT / "benchmarks").glob("bench_*.py"))
OPTIONAL_PEERS = ("trl", "datasets", "openai", "transformers")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_smoke")
    env = {**os.environ, "GADX_BENCH_SMOKE": "1", "GADX_BENCH_OUT": str(out / "results"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("TRITON_INTERPRET", None)  # tests/conftest.py sets it; `pytest benchmarks/` from a shell does not
    # one thread per process: smoke shapes gain nothing from intra-op threads, and the benchmarks
    # run two processes at once, so two threads each only spin against each other on 2 cores
    env.setdefault("OMP_NUM_THREADS", "1")
    junit = out / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", *map(str, BENCH_FILES), "-q", "-p", "no:cacheprovider",
           "--benchmark-disable", f"--junitxml={junit}", "-o", "timeout=300"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert junit.exists(), f"no JUnit report (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    cases = []
    for tc in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, f"{child.get('message', '')}\n{child.text or ''}"
                break
        cases.append({"module": tc.get("classname", "").split(".")[-1], "name": tc.get("name"),
                      "outcome": outcome, "message": message})
    return {"proc": proc, "cases": cases, "out": out}


@pytest.mark.timeout(960)
@pytest.mark.parametrize("bench", [p.stem for p in BENCH_FILES])
def test_benchmark_runs_at_smoke_size(bench, smoke_run):
    mine = [c for c in smoke_run["cases"] if c["module"] == bench]
    tail = smoke_run["proc"].stdout[-3000:]
    assert mine, f"{bench}: no test ran (collection error?)\n{tail}"
    for c in mine:
        assert c["outcome"] in ("passed", "skipped"), f"{bench}::{c['name']} {c['outcome']}:\n{c['message'][-3000:]}"
        if c["outcome"] == "skipped":
            assert any(p in c["message"] for p in OPTIONAL_PEERS), \
                f"{bench}::{c['name']} skipped for a reason other than a missing optional peer: {c['message']}"


@pytest.mark.timeout(960)
def test_smoke_results_are_marked(smoke_run):
    """The harness's results writer ran (bench_kernels' ratio against torch eager needs no optional
    peer, so there is always a row), marked the file as smoke, and wrote where it was told."""
    files = list((smoke_run["out"] / "results").glob("*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    assert data["smoke"] is True and data["rows"], data
    assert all(r["ours"] == r["ours"] and r["peer"] == r["peer"] for r in data["rows"]), data["rows"]  # no NaN
