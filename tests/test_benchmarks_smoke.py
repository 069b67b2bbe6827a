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
Every benchmark that publishes numbers also writes its results file (benchmarks/results.py) into
the session's directory (GADX_BENCH_RESULTS), valid against the schema and marked smoke, so a
benchmark whose results writer breaks fails here too, not at the next full run.
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
# benchmark file -> its results file stem; a bench_*.py that builds Results(...) is added automatically
WRITERS = {"bench_grpo_step": "grpo_step", "bench_e2e": "e2e", "bench_teacher": "teacher", "bench_kernels": "kernels",
           "bench_loss_memory": "loss_memory"}
WRITERS.update({p.stem: p.stem.removeprefix("bench_") for p in BENCH_FILES
                if p.stem not in WRITERS and "Results(" in p.read_text()})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_smoke")
    env = {**os.environ, "GADX_BENCH_SMOKE": "1", "GADX_BENCH_OUT": str(out / "results"),
           "GADX_BENCH_RESULTS": str(out / "schema"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("TRITON_INTERPRET", None)  # tests/conftest.py sets it; `pytest benchmarks/` from a shell does not
    # one thread per process: smoke shapes gain nothing from intra-op threads
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
@pytest.mark.parametrize("bench", sorted(WRITERS))
def test_results_file_is_written(bench, smoke_run):
    """The benchmark wrote <results stem>.json where it was told, in the schema, marked smoke, no NaN."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from results import validate

    path = smoke_run["out"] / "schema" / f"{WRITERS[bench]}.json"
    assert path.exists(), f"{bench} wrote no results file {path.name}:\n{smoke_run['proc'].stdout[-3000:]}"
    data = json.loads(path.read_text())
    validate(data)
    assert data["benchmark"] == WRITERS[bench] and data["smoke"] is True, data
    assert data["rounds"] >= 1 and data["load_avg_1m_after"] is not None, data
    assert all(r["median"] == r["median"] for r in data["rows"]), data["rows"]  # no NaN

