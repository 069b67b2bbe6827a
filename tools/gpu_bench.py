"""gadx's GPU suite for one lent H100/H200: kernel table, sampler tokens/s, update-step MFU; one table last.

    bash tools/gpu_check.sh                      # on the device machine (installs carried wheels, then this)
    python tools/gpu_bench.py --out $OUT         # the suite, < 8 min; JSON to $OUT/gpu_bench.json
    python tools/gpu_bench.py --dry-run          # CPU smoke run of every code path with tiny shapes (< 60 s)

Sections, each guarded (an error or a missing dependency becomes a row that says so,
and the rest still run) and skipped when the time budget is spent:
  peak     bf16 matmul TFLOP/s measured here (the MFU denominator beside the spec sheet's)
  kernels  tools/gpu_bench_kernels.py (fused GRPO loss vs eager / torch.compile / Liger), reduced rows
  sampler  gadx KVCacheSampler vs transformers ``generate`` on one random Qwen2.5-0.5B-shaped model,
           bf16, batch 64, 128 prompt + 128 new tokens, temperature 0.8: tokens/s and the ratio
  update   one GRPO update step of the student (megatron GPTModel through gadx.train.player.Player:
           packed micro-batches, fused loss, backward, distributed AdamW) on 32 x (256 + 256) tokens:
           time, tokens/s and MFU = model FLOPs / time / peak (6 x params x tokens + attention)
Random weights throughout (nothing is downloaded). Needs megatron-core importable: the device
image lacks it, so gpu_check.sh installs the wheel carried in .whl/ (see its header).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Qwen2.5-0.5B's shape (HF config names); the dry run shrinks it
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)
# dense bf16 tensor-core peaks from the vendor's sheets (SXM parts), TFLOP/s
SPEC_PEAK = {"H100": 989.4, "H200": 989.4}


def ensure_gadx_kernels() -> None:
    """Make ``gadx.kernels`` importable from a plain checkout (pip install -e maps kernels/ onto it)."""
    sys.path.insert(0, str(ROOT))
    try:
        import gadx.kernels  # noqa: F401
        return
    except ModuleNotFoundError:
        pass
    spec = importlib.util.spec_from_file_location("gadx.kernels", ROOT / "kernels" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "kernels")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gadx.kernels"] = mod
    spec.loader.exec_module(mod)
    import gadx

    gadx.kernels = mod


class Ctx:
    def __init__(self, args):
        import torch

        self.args, self.t0 = args, time.perf_counter()
        self.dry = args.dry_run
        self.device = torch.device("cpu" if self.dry else "cuda")
        self.dtype = torch.float32 if self.dry else torch.bfloat16
        self.shape = TINY if self.dry else QWEN25_05B
        self.rows: list[dict] = []
        self.results: dict = {}

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def row(self, section, measure, value, unit, peer_name="", peer=None, higher_is_better=True, note=""):
        ratio = None
        if peer:
            ratio = value / peer if higher_is_better else peer / value
        self.rows.append({"section": section, "measure": measure, "value": value, "unit": unit, "peer_name": peer_name,
                          "peer": peer, "speedup": ratio, "note": note})


def section(name: str, min_left_s: float):
    """Run a section if ``min_left_s`` of the budget is left; turn an exception into an error row."""
    def wrap(fn):
        def run(ctx: Ctx):
            if ctx.left() < min_left_s:
                ctx.row(name, "skipped", float("nan"), "", note=f"{ctx.left():.0f} s of budget left, needs {min_left_s:.0f}")
                return
            t0 = time.perf_counter()
            try:
                fn(ctx)
            except Exception as e:  # one broken section must not cost the others' numbers
                ctx.results[f"{name}_error"] = traceback.format_exc()
                ctx.row(name, "error", float("nan"), "", note=f"{type(e).__name__}: {str(e)[:160]}")
                print(traceback.format_exc(), file=sys.stderr, flush=True)
            ctx.results.setdefault("section_s", {})[name] = time.perf_counter() - t0
        return run
    return wrap


def bench(ctx: Ctx, fn, *, warmup: int = 1, reps: int = 3) -> list[float]:
    """Wall times of ``reps`` calls after ``warmup`` ones (a dry run checks paths: one timed call)."""
    reps = 1 if ctx.dry else reps
    for _ in range(warmup):
        fn()
    ctx.sync()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        out.append(time.perf_counter() - t0)
    return out


# ---- sections -------------------------------------------------------------------------------


@section("peak", 5)
def peak_section(ctx: Ctx) -> None:
    import torch

    n = 512 if ctx.dry else 8192
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    times = bench(ctx, lambda: a @ b, warmup=3, reps=10)
    tflops = 2 * n**3 / statistics.median(times) / 1e12
    ctx.results["matmul_tflops"] = tflops
    name = torch.cuda.get_device_name(0) if ctx.device.type == "cuda" else platform.processor() or "cpu"
    spec = next((v for k, v in SPEC_PEAK.items() if k in name), None)
    ctx.results["spec_tflops"] = spec
    ctx.row("peak", f"matmul {n}^3 {str(ctx.dtype).split('.')[-1]}", tflops, "TFLOP/s",
            note=f"spec sheet {spec} TFLOP/s" if spec else "")


@section("kernels", 60)
def kernels_section(ctx: Ctx) -> None:
    script = ROOT / "tools" / "gpu_bench_kernels.py"
    if not script.is_file():
        ctx.row("kernels", "skipped", float("nan"), "", note="tools/gpu_bench_kernels.py not found")
        return
    out = Path(ctx.args.out) / "kernels.json"
    args = ["--dry"] if ctx.dry else ["--models", "qwen2.5-1.5b,qwen2.5-7b", "--tokens", "8192"]
    launcher = (f"import sys, runpy; sys.path.insert(0, {str(ROOT / 'tools')!r}); import gpu_bench; "
                f"gpu_bench.ensure_gadx_kernels(); sys.argv = [{str(script)!r}] + sys.argv[1:]; "
                f"runpy.run_path({str(script)!r}, run_name='__main__')")
    timeout = max(30.0, min(ctx.left() - 150, 240))  # leave the sampler and update sections their time
    proc = subprocess.run([sys.executable, "-c", launcher, *args, "--out", str(out)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    ctx.results["kernels_stdout"] = proc.stdout[-20000:]
    if proc.returncode != 0:
        raise RuntimeError(f"gpu_bench_kernels.py exited {proc.returncode}: {proc.stderr[-600:]}")
    if out.is_file():
        ctx.results["kernels"] = json.loads(out.read_text())
    ctx.row("kernels", "table", float("nan"), "", note=f"printed above; full numbers in {out.name}")


def _hf_model(ctx: Ctx, max_pos: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**ctx.shape, max_position_embeddings=max_pos, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(ctx.device):
        model = Qwen2ForCausalLM(cfg).to(ctx.dtype).eval()
    model.generation_config.pad_token_id = 0
    return model


@section("sampler", 60)
def sampler_section(ctx: Ctx) -> None:
    import torch

    from gadx.models import ModelConfig
    from gadx.sampler import KVCacheSampler

    B, prompt_len, new = (4, 8, 8) if ctx.dry else (64, 128, 128)
    hf = _hf_model(ctx, prompt_len + new)
    cfg = ModelConfig.from_hf_dict(hf.config.to_dict())
    sampler = KVCacheSampler(cfg, device=ctx.device, dtype=ctx.dtype, max_batch=B, max_seq_len=prompt_len + new)
    sampler.load_weights(hf.state_dict())
    g = torch.Generator().manual_seed(0)
    prompts_BT = torch.randint(3, cfg.vocab_size, (B, prompt_len), generator=g)
    prompts = prompts_BT.tolist()
    eos = [2]

    def ours():
        ours.out = sampler.generate(prompts, max_new_tokens=new, temperature=0.8, eos_ids=eos, seed=0)

    def peer():
        with torch.no_grad():
            peer.out = hf.generate(prompts_BT.to(ctx.device), attention_mask=torch.ones_like(prompts_BT, device=ctx.device),
                                   do_sample=True, temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=new,
                                   eos_token_id=eos, pad_token_id=0)

    t_ours = statistics.median(bench(ctx, ours, warmup=1, reps=3))
    tok_ours = sum(len(r) for r in ours.out.responses)
    t_peer = statistics.median(bench(ctx, peer, warmup=1, reps=3))
    tok_peer = sum(_until_eos(row, eos) for row in peer.out[:, prompt_len:].tolist())
    ctx.results["sampler"] = {"batch": B, "prompt_len": prompt_len, "new_tokens": new, "ours_s": t_ours,
                              "ours_tokens": tok_ours, "hf_s": t_peer, "hf_tokens": tok_peer}
    ctx.row("sampler", f"tokens/s, batch {B}, {prompt_len}+{new} tok, T=0.8", tok_ours / t_ours, "tok/s",
            "transformers.generate", tok_peer / t_peer)


def _until_eos(ids: list[int], eos: list[int]) -> int:
    """Tokens generated up to and including the first EOS (generate pads the rest)."""
    return next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))


def model_flops(cfg, seq_lens: list[int]) -> float:
    """Training FLOPs of one forward+backward: 6 x matmul params x tokens + causal attention (x3 for backward)."""
    H, L, V, I = cfg.hidden_size, cfg.num_layers, cfg.vocab_size, cfg.intermediate_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    per_layer = H * (q + 2 * kv) + q * H + 3 * H * I
    tokens = sum(seq_lens)
    dense = 6 * tokens * (L * per_layer + V * H)
    attn = 3 * sum(L * 4 * q * n * (n + 1) / 2 for n in seq_lens)  # QK^T and AV over the causal half
    return dense + attn


@section("update", 60)
def update_section(ctx: Ctx) -> None:
    import torch

    from gadx.models import ModelConfig, build_model
    from gadx.parallel import init_parallel
    from gadx.train import heads
    from gadx.train.player import Player, scaled_normalizer
    from gadx.train.packing import global_token_count, pack

    S, prompt_len, resp_len, budget = (4, 8, 8, 32) if ctx.dry else (32, 256, 256, 4096)
    cfg = ModelConfig.from_hf_dict({**ctx.shape, "model_type": "qwen2", "max_position_embeddings": prompt_len + resp_len,
                                    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "rms_norm_eps": 1e-6})
    dims = init_parallel(1, 1, seed=0)
    model = build_model(cfg, parallel=dims, dtype=ctx.dtype)
    player = Player(model, lr=1e-6, weight_decay=0.0, clip_grad=1.0)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, cfg.vocab_size, (S, prompt_len), generator=g).tolist()
    responses = torch.randint(3, cfg.vocab_size, (S, resp_len), generator=g).tolist()
    adv_S = torch.randn(S, generator=g)
    old = [-torch.rand(resp_len, generator=g) * 5 for _ in range(S)]
    mbs = pack(prompts, responses, budget, device=ctx.device, per_token={
        "adv": [adv_S[i].expand(resp_len) for i in range(S)], "old": old, "ref": [o.clone() for o in old]})
    norm = global_token_count(mbs, dims.dp_group).clamp(min=1)
    scaled = scaled_normalizer(norm, dims.dp, len(mbs))

    def fs(mb, chunk):
        def loss_func(hidden_1TH):
            loss, _ = heads.grpo_loss(model, hidden_1TH[0], mb.targets_T, mb.per_token["adv"], mb.per_token["old"],
                                      mb.per_token["ref"], mb.mask_T, kl_coef=0.001, temperature=0.8,
                                      normalizer=scaled)
            return loss, {"loss": loss.detach()}
        return chunk(mb.input_ids_1T, mb.position_ids_1T, mb.doc_ids_1T), loss_func

    split = {"fwd_bwd": [], "optim": []}

    def step():
        t0 = time.perf_counter()
        outs = player.run(mbs, fs)
        ctx.sync()
        t1 = time.perf_counter()
        loss = torch.stack([o["loss"] for o in outs]).sum()
        applied, _ = player.step(loss)
        ctx.sync()
        split["fwd_bwd"].append(t1 - t0)
        split["optim"].append(time.perf_counter() - t1)
        assert applied and math.isfinite(float(loss)), f"update step skipped or non-finite loss {float(loss)}"

    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = bench(ctx, step, warmup=1, reps=3)
    t = statistics.median(times)
    flops = model_flops(cfg, [prompt_len + resp_len] * S)
    tokens = S * (prompt_len + resp_len)
    peak = ctx.results.get("matmul_tflops")
    spec = ctx.results.get("spec_tflops")
    tflops = flops / t / 1e12
    ctx.results["update"] = {"sequences": S, "prompt_len": prompt_len, "resp_len": resp_len, "micro_batches": len(mbs),
                             "budget": budget, "step_s": times, "fwd_bwd_s": split["fwd_bwd"][1:],
                             "optim_s": split["optim"][1:], "model_tflop": flops / 1e12, "tflops": tflops,
                             "params": sum(p.numel() for p in model.parameters()),
                             "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if ctx.device.type == "cuda" else None}
    ctx.row("update", f"GRPO step {S}x({prompt_len}+{resp_len}) tok", tokens / t, "tok/s",
            note=f"{t * 1e3:.0f} ms/step, fwd+bwd {statistics.median(split['fwd_bwd'][1:]) * 1e3:.0f} ms, "
                 f"optimizer {statistics.median(split['optim'][1:]) * 1e3:.0f} ms")
    ctx.row("update", "model TFLOP/s", tflops, "TFLOP/s")
    if peak:
        ctx.row("update", "MFU vs measured matmul peak", 100 * tflops / peak, "%")
    if spec:
        ctx.row("update", "MFU vs spec-sheet bf16 peak", 100 * tflops / spec, "%")


# ---- driver ---------------------------------------------------------------------------------


def env_info(ctx: Ctx) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if ctx.device.type == "cuda" else "cpu (dry run)",
            "dry_run": ctx.dry, "commit": os.environ.get("GADX_COMMIT"), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for mod in ("triton", "transformers", "megatron.core"):
        try:
            info[mod] = __import__(mod, fromlist=["__version__"]).__version__
        except Exception as e:  # optional here; the section that needs it reports the failure
            info[mod] = f"missing ({type(e).__name__})"
    return info


def table(ctx: Ctx, info: dict) -> str:
    lines = [f"### gadx GPU suite on {info['device']}, torch {info['torch']}, triton {info.get('triton')}, "
             f"{info['time_utc']}{' (DRY RUN: tiny shapes on CPU, not a measurement)' if ctx.dry else ''}",
             "| section | measure | gadx | peer | peer value | speed-up | note |", "|---|---|---|---|---|---|---|"]
    for r in ctx.rows:
        v = "" if math.isnan(r["value"]) else f"{r['value']:.4g} {r['unit']}"
        p = "" if r["peer"] is None else f"{r['peer']:.4g} {r['unit']}"
        s = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"| {r['section']} | {r['measure']} | {v} | {r['peer_name']} | {p} | {s} | {r['note']} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_bench_out"), help="folder for JSON (default $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: exercises every path, times nothing")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget; sections past it are skipped")
    ap.add_argument("--sections", default="peak,kernels,sampler,update", help="comma list")
    return ap.parse_args(argv)


SECTIONS = {"peak": peak_section, "kernels": kernels_section, "sampler": sampler_section, "update": update_section}


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.sections.split(",")
    bad = [n for n in names if n not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown sections {bad}; choose from {list(SECTIONS)}")
    ensure_gadx_kernels()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args)
    info = env_info(ctx)
    for n in names:
        print(f"gpu_bench: {n} ({ctx.left():.0f} s of budget left)", file=sys.stderr, flush=True)
        SECTIONS[n](ctx)
    ctx.results["total_s"] = time.perf_counter() - ctx.t0
    out = Path(args.out) / "gpu_bench.json"
    out.write_text(json.dumps({"machine": info, "rows": ctx.rows, "results": ctx.results}, indent=2, default=str))
    if ctx.results.get("kernels_stdout"):
        print(ctx.results["kernels_stdout"])
    print(table(ctx, info))
    print(f"results: {out} ({ctx.results['total_s']:.0f} s)")
    return 1 if any(r["measure"] == "error" for r in ctx.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
