"""CLI start-up: commands import only what they use, and megatron's TE/Apex fallback warnings are silenced."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

HEAVY = ("megatron", "torch", "transformer_engine")


def imported(stderr: str) -> set[str]:
    """Top-level packages from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def importtime(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_help_and_light_commands_import_no_torch_or_megatron():
    for argv in (["--help"], ["collect", "--help"], ["eval", "--help"], ["serve", "--help"]):
        proc = importtime(f"import sys; from gadx.cli import main; sys.argv = ['gadx', *{argv!r}]; "
                          "sys.exit(main())")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not imported(proc.stderr) & set(HEAVY), (argv, imported(proc.stderr) & set(HEAVY))


def test_serve_synthetic_answers_without_torch_or_megatron():
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "gadx", "serve", "--synthetic", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        url = banner.split(" at ")[1].split()[0]
        req = urllib.request.Request(url + "/chat/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "x", "max_tokens": 16, "messages": [
                                         {"role": "user", "content": "Give me five instruments. Answer in one sentence."}
                                     ]}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.loads(r.read())["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert not imported(err) & set(HEAVY), imported(err) & set(HEAVY)


def test_checkpoint_serving_and_eval_need_no_megatron(tmp_path):
    # `gadx serve --model` and `gadx eval --model` decode with the KV-cache sampler: torch, not megatron
    pytest.importorskip("transformers")
    from gadx.tokenizer import train_sentencepiece
    from tiny_models import hf_model

    texts = [f"the {a} {b} sat on the {c} mat number {n}." for n, (a, b, c) in enumerate(
        (a, b, c) for a in ("red", "green", "blue", "black") for b in ("cat", "dog", "fox") for c in ("big", "small"))
    ] * 10
    tok = train_sentencepiece(texts, tmp_path, 296)
    hf_model("qwen2", vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, bos_token_id=tok.bos_id,
             eos_token_id=tok.eos_id, pad_token_id=tok.pad_id).save_pretrained(tmp_path)
    proc = importtime(
        "import gadx.eval.generate, gadx.eval.cli, gadx.collect, gadx.teacher\n"
        "from gadx.serve.backends import CheckpointBackend\n"
        "from gadx.serve.protocol import ChatRequest\n"
        f"b = CheckpointBackend({str(tmp_path)!r}, max_batch=2)\n"
        "print(b.sampler.generate([[1, 2, 3]], max_new_tokens=4, eos_ids=[0]).responses)\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "megatron" not in imported(proc.stderr)


def test_megatron_fallback_warnings_are_silenced_and_others_are_not():
    code = ("import warnings, gadx; from gadx.models import build_model; import megatron.core.optimizer, "
            "megatron.core.distributed; warnings.warn('a warning of our own', UserWarning)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not installed" not in proc.stderr, proc.stderr
    assert "a warning of our own" in proc.stderr
