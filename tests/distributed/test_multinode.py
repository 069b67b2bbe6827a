"""A real multi-node launch on one machine: two torchrun agents (`--nnodes 2 --nproc-per-node 1`)
meet through the c10d rendezvous (and, second test, the static one), as the lines in
docs/distributed.md are written, and train the embedded world at TP=2 across the two "nodes"
over gloo on loopback: warmup, gate, GAD, evaluation. Their metrics and final table equal one
agent's running both ranks (`--standalone --nproc-per-node 2`). Global rank 0 serves and alone
asks the embedded teacher (gadx.train.teacher_feed), wherever the rendezvous puts it."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from launch import wait_all

pytestmark = pytest.mark.slow

TINY = """
[run]
plan = "gad"
progress = false
tensorboard = false
eval_every = 2
eval_size = 4
eval_limit = 4
[data]
held_out_size = 4
[model]
vocab_size = 400
hidden_size = 32
intermediate_size = 64
num_layers = 1
num_heads = 2
num_kv_heads = 2
[stages]
prompts_per_step = 4
sft_prompts_per_step = 8
n_samples = 2
rollout_prompts_per_call = 2
max_prompt_len = 48
max_response_len = 12
[stages.warmup]
steps = 3
g_only_steps = 1
d_only_steps = 1
[stages.gad]
steps = 2
d_gate_steps = 1
d_acc_gate = 0.0
[parallel]
tp = 2
micro_batch_tokens = 256
"""
VOLATILE = ("tokens_per_s", "rollout_tokens_per_s", "teacher/cost_usd")


def _torchrun() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(cwd: Path, argvs: list[list[str]], timeout: float = 600) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen(_torchrun() + a, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for a in argvs]
    wait_all(procs, timeout, "agent")


def _train(out: str, *extra: str) -> list[str]:
    args = ["-m", "gadx.train", "--config", "tiny.toml", "--set", f"run.out_dir={out}"]
    for e in extra:
        args += ["--set", e]
    return args


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not (k.startswith("time") or k in VOLATILE)} for r in rows]


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """The single-agent reference run (2 ranks on one agent)."""
    d = tmp_path_factory.mktemp("multinode")
    (d / "tiny.toml").write_text(TINY)
    _agents(d, [["--standalone", "--nproc-per-node", "2", *_train("one_agent")]])
    return d


def _assert_same(cwd: Path, name: str) -> None:
    want, got = _rows(cwd / "one_agent" / "gad" / "metrics.jsonl"), _rows(cwd / name / "gad" / "metrics.jsonl")
    assert len(got) == len(want) == 5  # 3 warmup + 2 GAD steps (the gate passed at once)
    assert got == want
    assert (cwd / name / "results.md").read_text() == (cwd / "one_agent" / "results.md").read_text()
    # the embedded teacher's cache: written by global rank 0 only, once
    assert (cwd / name / "teacher_cache.sqlite").is_file()


def test_c10d_two_agents_equal_one(cwd):
    # docs/distributed.md: torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d
    #   --rdzv-endpoint $HEAD:29500 --rdzv-id gad-qwen14b -m gadx.train --config ... (run on every node)
    line = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{_port()}", "--rdzv-id", "gad-test", *_train("c10d")]
    _agents(cwd, [line, line])
    _assert_same(cwd, "c10d")


def test_static_two_agents_equal_one(cwd):
    # docs/distributed.md: torchrun --nnodes 2 --node-rank $NODE_RANK --nproc-per-node 8
    #   --master-addr $HEAD --master-port 29500 -m gadx.train --config FILE ...
    port = _port()
    lines = [["--nnodes", "2", "--node-rank", str(r), "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
              "--master-port", str(port), *_train("static", "teacher.embedded_host=localhost")] for r in (0, 1)]
    _agents(cwd, lines)
    _assert_same(cwd, "static")
