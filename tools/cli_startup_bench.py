"""CLI start-up times: `gadx --help`, and the first reply of `gadx serve` (synthetic and a checkpoint).

    python tools/cli_startup_bench.py                  # --help x10, serve --synthetic x3
    python tools/cli_startup_bench.py --tiny-model     # also serve --model on a tiny random Qwen2 folder (needs transformers)

Each number is the median of --repeats fresh processes: for serve, wall time
from spawning `python -m gadx serve ... --port 0` to the first 200 reply of a
chat request, and the server process's CPU time (user + system; less sensitive
to other load than wall time). Prints one JSON line with the 1-minute load
average beside it (on a shared machine wall times grow with the load).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_help() -> tuple[float, float]:
    """(wall s, CPU s) of one `gadx --help`."""
    t0, c0 = time.perf_counter(), _cpu_children()
    subprocess.run([sys.executable, "-m", "gadx", "--help"], check=True, capture_output=True)
    return time.perf_counter() - t0, _cpu_children() - c0


def time_first_reply(*source: str) -> tuple[float, float]:
    """(wall s to the first reply, CPU s of the whole server process) of one `gadx serve`."""
    t0, c0 = time.perf_counter(), _cpu_children()
    proc = subprocess.Popen([sys.executable, "-m", "gadx", "serve", *source, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().split(" at ")[1].split()[0]
        body = json.dumps({"model": "x", "max_tokens": 8,
                           "messages": [{"role": "user", "content": "Give me five instruments. Answer in one sentence."}]})
        req = urllib.request.Request(url + "/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            assert r.status == 200
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return wall, _cpu_children() - c0


def median2(pairs) -> dict[str, float]:
    pairs = list(pairs)
    return {"wall_s": round(statistics.median(p[0] for p in pairs), 3),
            "cpu_s": round(statistics.median(p[1] for p in pairs), 3)}


def tiny_model(folder: str) -> str:
    import torch
    import transformers

    from gadx.tokenizer import train_sentencepiece

    texts = [f"the {a} {b} sat on the {c} mat number {n}." for n, (a, b, c) in enumerate(
        (a, b, c) for a in ("red", "green", "blue", "black") for b in ("cat", "dog", "fox") for c in ("big", "small"))
    ] * 10
    tok = train_sentencepiece(texts, folder, 296)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(folder)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny-model", action="store_true")
    args = p.parse_args()
    out = {"load_avg_1m_start": round(os.getloadavg()[0], 1)}
    out["help"] = median2(time_help() for _ in range(max(10, args.repeats)))
    out["serve_synthetic_first_reply"] = median2(time_first_reply("--synthetic") for _ in range(args.repeats))
    if args.tiny_model:
        with tempfile.TemporaryDirectory() as tmp:
            folder = tiny_model(tmp)
            out["serve_model_first_reply"] = median2(time_first_reply("--model", folder) for _ in range(args.repeats))
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
