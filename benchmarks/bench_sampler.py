"""Rollout generation: gadx's samplers (compiled and eager) vs transformers' ``generate``, same model, same run.

    pytest benchmarks/bench_sampler.py --benchmark-only -s            # both models, 3 rounds
    python benchmarks/bench_sampler.py --model tiny --rounds 3 --results benchmarks/results/sampler_tiny.json
    python benchmarks/bench_sampler.py --model smollm2-10l --rounds 3 --results benchmarks/results/sampler_smollm2_10l.json
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_sampler.py             # seconds: batch 4 x 8 new tokens, 1 layer

Models (random weights, fp32, built here): "tiny" is a Qwen2 of 4 layers, hidden 256, GQA 4/2, vocab
4096, batch 64 prompts of 16 tokens, 128 new tokens; "smollm2-10l" is SmolLM2-135M's shape (Llama,
hidden 576, 9/3 heads, vocab 49,152, tied) cut to 10 layers as the real run's student, batch 32 x 128
new. Sampled at temperature 0.8 with no EOS stop, so every engine generates exactly B x N tokens.

Engines: transformers ``generate`` (the peer), gadx ``KVCacheSampler`` (eager) and
``CompiledKVCacheSampler`` (torch.compile'd decode step), all in this one process with the same torch
threads (``--threads``, default 2), run serially in alternating rounds (hf, eager, compiled; x rounds),
each timed in wall and process CPU time; rows are medians with min-max. The compiled sampler's first
call (which compiles) is excluded and reported as its compile time. Correctness first: eager greedy
equals transformers' greedy, compiled greedy equals eager greedy on the whole batch.

``GADX_BENCH_RESULTS=1`` (pytest) writes ``benchmarks/results/sampler_<model>.json`` (schema of
/work/wt/briefs/schema.md: machine, versions, load average before/after, commit, rows); the CLI writes
where ``--results`` says.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from gadx.models.config import ModelConfig
from gadx.sampler import KVCacheSampler
from gadx.sampler.compiled import CompiledKVCacheSampler

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import SMOKE  # noqa: E402
from results import cpu_name, git_commit  # noqa: E402

TEMPERATURE = 0.8
MODELS = {
    # name: (family, HF config kwargs, batch, prompt length, new tokens, goal vs transformers or None)
    "tiny": ("qwen2", dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                           max_position_embeddings=512), 64, 16, 128, 3.0),
    "smollm2-10l": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=10,
                                  num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                                  rope_theta=1e5, max_position_embeddings=2048), 32, 16, 128, None),
}
SMOKE_MODEL = ("qwen2", dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6,
                             max_position_embeddings=64), 4, 8, 8, None)


def build(name: str):
    import transformers

    family, kw, B, P, N, goal = SMOKE_MODEL if SMOKE else MODELS[name]
    cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[family]
    torch.manual_seed(0)
    # initializer_range 0.1: the default 0.02 makes a random model repeat one token, and greedy checks trivial
    hf = cls[1](cls[0](**kw, initializer_range=0.1)).eval()
    return hf, B, P, N, goal


def hf_generate(model, ids, *, do_sample, n):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=do_sample, temperature=TEMPERATURE
                              if do_sample else None, top_p=1.0, top_k=0, max_new_tokens=n, min_new_tokens=n,
                              pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]


def _cpu_with_children() -> float:
    """User + system CPU seconds of this process and of its finished children (inductor's g++ runs)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _load1() -> float:
    return os.getloadavg()[0]


def _commit() -> str:
    """benchmarks/results.py's rule: +dirty only when tracked files outside benchmarks/results/ differ."""
    return git_commit() or "unknown"


def run(name: str, *, rounds: int, threads: int, log=print) -> dict:
    """Measure one model; return the results document (schema.md)."""
    import transformers

    torch.set_num_threads(threads)
    load_before = _load1()
    hf, B, P, N, goal = build(name)
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    sd = hf.state_dict()
    eager = KVCacheSampler(cfg, max_batch=B, max_seq_len=P + N)
    comp = CompiledKVCacheSampler(cfg, max_batch=B, max_seq_len=P + N)
    eager.load_weights(sd)
    comp.load_weights(sd)
    ids = torch.randint(3, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(1))
    prompts = ids.tolist()

    # correctness: eager == transformers (greedy, 4 rows); compiled == eager (greedy, every row). The
    # compiled greedy call compiles the greedy graphs (not the timed, sampled ones).
    n_check = min(N, 16)
    want = eager.generate(prompts[:4], max_new_tokens=n_check, temperature=0).responses
    assert want == hf_generate(hf, ids[:4], do_sample=False, n=n_check).tolist()
    # (on n_check tokens: over 128 tokens of a random-weight model, the compiled graph's fused float
    # reductions flip a near-tied argmax on some row now and then: seen once in two runs)
    check_greedy = eager.generate(prompts, max_new_tokens=n_check, temperature=0).responses
    assert comp.generate(prompts, max_new_tokens=n_check, temperature=0).responses == check_greedy
    compile_greedy_s = sum(comp.compile_s.values())

    def gadx(sampler):
        def go():
            out = sampler.generate(prompts, max_new_tokens=N, temperature=TEMPERATURE, seed=0)
            assert out.lengths.tolist() == [N] * B
        return go

    def peer():
        assert hf_generate(hf, ids, do_sample=True, n=N).shape == (B, N)

    engines = {"transformers.generate": peer, "gadx eager": gadx(eager), "gadx compiled": gadx(comp)}
    # warm-up: the compiled sampler's first sampled call compiles (timed, excluded from tok/s); one short
    # call for the others (first-call allocations, lazy imports)
    t0, c0 = time.perf_counter(), _cpu_with_children()
    engines["gadx compiled"]()
    first_call_s = time.perf_counter() - t0
    # CPU seconds of the compiling call, the C++ compiler's child processes included (on a loaded host its
    # wall time says little); minus one sampled call's CPU time (below) it is the compile's own CPU cost
    first_call_cpu_s = _cpu_with_children() - c0
    compile_s = dict(comp.compile_s)
    hf_generate(hf, ids, do_sample=True, n=4)
    eager.generate(prompts, max_new_tokens=4, temperature=TEMPERATURE, seed=0)

    wall = {k: [] for k in engines}
    cpu = {k: [] for k in engines}
    for r in range(rounds):
        for k, fn in engines.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            log(f"round {r}: {k} {wall[k][-1]:.2f} s wall, {cpu[k][-1]:.2f} CPU s, load {_load1():.1f}")
    assert comp.compile_s == compile_s, "the timed rounds recompiled"

    tokens = B * N
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    peer_tps = tokens / med["transformers.generate"]
    peer_cpu_tps = tokens / med_cpu["transformers.generate"]
    rows = []
    for k in engines:
        tps = [tokens / t for t in wall[k]]
        is_peer = k == "transformers.generate"
        row_goal = goal if k == "gadx compiled" else None
        ratio = None if is_peer else (tokens / med[k]) / peer_tps
        rows.append({"name": f"{name}: {k}, tokens/s, batch {B} x {N} new", "baseline": "transformers.generate",
                     "median": tokens / med[k], "min": min(tps), "max": max(tps), "unit": "tok/s",
                     "cpu_time_median": med_cpu[k], "cpu_tokens_per_cpu_s": tokens / med_cpu[k],
                     "ratio_vs_baseline": ratio,
                     "ratio_vs_baseline_cpu_time": None if is_peer else (tokens / med_cpu[k]) / peer_cpu_tps,
                     "goal": row_goal, "goal_met": None if row_goal is None else ratio >= row_goal,
                     "wall_s": wall[k], "cpu_s": cpu[k]})
    rows.append({"name": f"{name}: gadx compiled vs eager, tokens/s", "baseline": "gadx eager",
                 "median": tokens / med["gadx compiled"], "min": tokens / max(wall["gadx compiled"]),
                 "max": tokens / min(wall["gadx compiled"]), "unit": "tok/s",
                 "cpu_time_median": med_cpu["gadx compiled"],
                 "ratio_vs_baseline": med["gadx eager"] / med["gadx compiled"], "goal": None, "goal_met": None})
    rows.append({"name": f"{name}: compile time (first sampled call, excluded above)", "baseline": "none",
                 # one measurement (the first call of each shape compiles): min = median = max
                 "median": sum(compile_s.values()) - compile_greedy_s, "min": sum(compile_s.values()) - compile_greedy_s,
                 "max": sum(compile_s.values()) - compile_greedy_s, "unit": "s",
                 "cpu_time_median": None, "ratio_vs_baseline": None, "goal": None, "goal_met": None,
                 "first_call_s": first_call_s, "greedy_graphs_s": compile_greedy_s, "per_graph_s": compile_s,
                 "break_even_calls": _break_even(sum(compile_s.values()) - compile_greedy_s, med),
                 "first_call_cpu_s": first_call_cpu_s,
                 "compile_cpu_s": first_call_cpu_s - med_cpu["gadx compiled"],
                 "break_even_calls_cpu": _break_even(first_call_cpu_s - med_cpu["gadx compiled"], med_cpu)})
    return {
        "benchmark": f"sampler_{name}" + ("_smoke" if SMOKE else ""), "commit": _commit(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": None},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "load_avg_1m_before": load_before, "load_avg_1m_after": _load1(), "threads": threads, "rounds": rounds,
        "smoke": SMOKE,
        "setup": {"model": name, "batch": B, "prompt": P, "new_tokens": N, "temperature": TEMPERATURE,
                  "dtype": "float32", "config": hf.config.to_dict().get("model_type")},
        "rows": rows,
    }


def _break_even(compile_s: float, med: dict) -> float | None:
    """Generate calls of this shape after which compiling has paid for itself against eager."""
    saved = med["gadx eager"] - med["gadx compiled"]
    return compile_s / saved if saved > 0 else None


def summary(doc: dict) -> str:
    lines = [f"{doc['benchmark']}: commit {doc['commit']}, {doc['threads']} threads, {doc['rounds']} rounds, "
             f"load {doc['load_avg_1m_before']:.1f} -> {doc['load_avg_1m_after']:.1f}"]
    for r in doc["rows"]:
        rng = f" ({r['min']:.4g}-{r['max']:.4g})" if r["min"] is not None else ""
        ratio = f", {r['ratio_vs_baseline']:.2f}x {r['baseline']}" if r["ratio_vs_baseline"] is not None else ""
        lines.append(f"  {r['name']}: {r['median']:.4g}{rng} {r['unit']}{ratio}")
    return "\n".join(lines)


def test_sampler_vs_transformers_generate(benchmark, record):
    import pytest

    pytest.importorskip("transformers", reason="the peer: pip install -e '.[bench]'")
    names = ["tiny"] if SMOKE else list(MODELS)
    rounds = int(os.environ.get("GADX_BENCH_REPEATS", "1" if SMOKE else "3"))

    def measure():
        return [run(n, rounds=rounds, threads=torch.get_num_threads()) for n in names]

    docs = benchmark.pedantic(measure, rounds=1, iterations=1)
    for doc in docs:
        print("\n" + summary(doc))
        for r in doc["rows"][:3]:
            if r["ratio_vs_baseline"] is not None:
                record(group="sampler", name=r["name"], ours=r["median"], peer_name=r["baseline"],
                       peer=r["median"] / r["ratio_vs_baseline"], unit="tok/s", higher_is_better=True,
                       extra={k: doc[k] for k in ("setup", "threads", "rounds")})
        if os.environ.get("GADX_BENCH_RESULTS") == "1" and not SMOKE:
            out = Path(__file__).parent / "results" / f"{doc['benchmark']}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(doc, indent=2))


def profile(name: str, *, threads: int, steps: int | None = None, row_limit: int = 25) -> str:
    """torch.profiler tables (self CPU time per op) of ``steps`` sampled decode steps of each engine (default:
    the benchmark's new tokens, so the compiled graphs have the benchmark's window and come from inductor's
    on-disk cache when the benchmark ran before), after a warm-up call (no compilation in the tables)."""
    from torch.profiler import ProfilerActivity, profile as prof

    torch.set_num_threads(threads)
    hf, B, P, N, _ = build(name)
    steps = N if steps is None else steps
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    ids = torch.randint(3, cfg.vocab_size, (B, P), generator=torch.Generator().manual_seed(1))
    out = []
    for label, sampler in (("gadx eager", KVCacheSampler), ("gadx compiled", CompiledKVCacheSampler)):
        s = sampler(cfg, max_batch=B, max_seq_len=P + N)
        s.load_weights(hf.state_dict())
        call = lambda: s.generate(ids.tolist(), max_new_tokens=steps, temperature=TEMPERATURE, seed=0)  # noqa: E731
        call()
        with prof(activities=[ProfilerActivity.CPU]) as p:
            call()
        out.append(f"## {label}: {B} x {steps} steps\n" + p.key_averages().table(sort_by="self_cpu_time_total",
                                                                                  row_limit=row_limit))
    hf_generate(hf, ids, do_sample=True, n=4)
    with prof(activities=[ProfilerActivity.CPU]) as p:
        hf_generate(hf, ids, do_sample=True, n=steps)
    out.append(f"## transformers.generate: {B} x {steps} steps\n" +
               p.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))
    return "\n".join(out)


def gemm_floor(name: str, *, threads: int, rounds: int = 3) -> dict:
    """CPU seconds of the decode steps' matrix products alone (a ``generate`` of the benchmark's batch x new
    tokens at its largest window, without anything else): the floor no decode step of this model goes under
    on this machine, whatever it fuses. Median of ``rounds``."""
    torch.set_num_threads(threads)
    hf, B, P, N, _ = build(name)
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    H, I, V, D = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    Hq, Hkv, L = cfg.num_heads, cfg.num_kv_heads, P + N
    G = Hq // Hkv
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    x_BH, o_BQ, m_BI = r(B, H), r(B, Hq * D), r(B, I)
    wq, wkv, wo, wgu, wd, lm = r(Hq * D, H), r(Hkv * D, H), r(H, Hq * D), r(I, H), r(H, I), r(V, H)
    q, kc, p = r(B * Hkv, G, D), r(B * Hkv, L, D), r(B * Hkv, G, L)

    def step():
        for _ in range(cfg.num_layers):
            x_BH @ wq.T, x_BH @ wkv.T, x_BH @ wkv.T  # q, k, v
            torch.bmm(q, kc.transpose(1, 2)), torch.bmm(p, kc)  # scores, weighted values
            o_BQ @ wo.T, x_BH @ wgu.T, x_BH @ wgu.T, m_BI @ wd.T  # o_proj, gate, up, down
        x_BH @ lm.T  # the LM head

    for _ in range(4):
        step()
    cpu = []
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(N):
            step()
        cpu.append(time.process_time() - c0)
    return {"model": name, "batch": B, "new_tokens": N, "window": L, "threads": threads,
            "gemm_cpu_s_median": statistics.median(cpu), "gemm_cpu_s": cpu, "load_avg_1m": _load1()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", help="write the JSON document here")
    ap.add_argument("--profile", help="instead: write torch.profiler tables of the decode steps of each engine here")
    ap.add_argument("--floor", action="store_true", help="instead: CPU time of the decode steps' matmuls alone")
    a = ap.parse_args()
    if a.floor:
        print(json.dumps(gemm_floor(a.model, threads=a.threads)))
        sys.exit(0)
    if a.profile:
        Path(a.profile).write_text(profile(a.model, threads=a.threads))
        sys.exit(0)
    doc = run(a.model, rounds=a.rounds, threads=a.threads, log=lambda s: print(s, flush=True))
    print(summary(doc))
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(json.dumps(doc, indent=2) + "\n")
