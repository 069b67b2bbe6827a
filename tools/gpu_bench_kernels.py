"""GPU benchmark of the fused head + GRPO loss (the benchmark plan of docs/design/kernels.md).

    python tools/gpu_bench_kernels.py                      # all rows, one H100/H200, < 8 min
    python tools/gpu_bench_kernels.py --models qwen2.5-7b --tokens 8192 --providers eager,ours
    python tools/gpu_bench_kernels.py --dry                # CPU smoke run of every code path (tiny shapes)

Providers: eager (bf16 logits -> fp32 log_softmax -> gather -> GRPO loss),
compile (the same under torch.compile), liger (LigerFusedLinearGRPOLoss, if
installed), ours (grpo_loss, path A), ours_logp (token_logprobs, path B, no grad).
Columns: fwd / bwd / total ms (median of triton.testing.do_bench, 20/80
quantiles in the JSON), peak MiB above the inputs, useful TFLOP/s = 6*T*H*V /
total (2*T*H*V for the no-grad row) and its % of the bf16 matmul peak measured
at the start, max |logp - fp64-from-bf16-inputs| on a 256-token slice.
"ours" forms its gradient during the forward pass (the loss is a scalar), so
its fwd column holds nearly all the work and bwd only the scaling of dX / dW.
Writes JSON (--out) and prints the table last. Every provider gets the same
precomputed old/ref log-probs; kl_coef=0.001.
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch

MODELS = {"qwen2.5-1.5b": (1536, 151936), "qwen2.5-7b": (3584, 152064), "llama3-8b": (4096, 128256)}
TOKENS = (4096, 8192, 16384, 32768)
PROVIDERS = ("eager", "compile", "liger", "ours", "ours_logp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma list of T")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {list(PROVIDERS)}")
    p.add_argument("--out", default="gpu_bench_kernels.json")
    p.add_argument("--dry", action="store_true", help="tiny shapes on CPU: checks the code paths, no timing value")
    a = p.parse_args(argv)
    a.models = a.models.split(",")
    a.tokens = [int(x) for x in a.tokens.split(",")]
    a.providers = a.providers.split(",")
    for m in a.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}")
    for q in a.providers:
        if q not in PROVIDERS:
            p.error(f"unknown provider {q!r}")
    return a


def grpo_eager(h, w, t, adv, old, ref, mask):
    # the log-ratios are clamped to +-20 before exp, as in kernels/loss_math.py (LOG_RATIO_CLAMP)
    logp = torch.log_softmax((h @ w.T).float(), -1).gather(1, t[:, None])[:, 0]
    ratio = torch.exp((logp - old).clamp(-20, 20))
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    d = (ref - logp).clamp(-20, 20)
    kl = (torch.exp(d) - d - 1).clamp(-10, 10)
    return ((pg + 0.001 * kl) * mask).sum() / mask.sum()


def make_provider(name, dry):
    from gadx.kernels import grpo_loss, token_logprobs
    if name == "eager":
        return grpo_eager
    if name == "compile":
        return torch.compile(grpo_eager, dynamic=True)
    if name == "ours":
        return lambda h, w, t, adv, old, ref, mask: grpo_loss(h, w, t, adv, old, ref, mask, normalizer=mask.sum())[0]
    if name == "ours_logp":
        return lambda h, w, t, *_: token_logprobs(h, w, t)
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss  # noqa: raises ImportError when absent
    liger = LigerFusedLinearGRPOLoss(beta=0.001, epsilon_low=0.2, epsilon_high=0.2)

    def run(h, w, t, adv, old, ref, mask):
        B = max(1, h.shape[0] // 1024)  # Liger chunks per sequence: 1024-token sequences
        seq_adv = adv.view(B, -1)[:, 0]
        out = liger(h.view(B, -1, h.shape[1]), w, t.view(B, -1), mask.view(B, -1).float(), seq_adv,
                    ref_per_token_logps=ref.view(B, -1), old_per_token_logps=old.view(B, -1))
        return out[0] if isinstance(out, tuple) else out
    return run


def timer(dry):
    if dry:
        def bench(fn):
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ts), min(ts), max(ts)
        return bench
    from triton.testing import do_bench
    return lambda fn: tuple(do_bench(fn, warmup=5, rep=40, quantiles=[0.5, 0.2, 0.8]))


def matmul_peak_tflops(dev, dry):
    n = 256 if dry else 8192
    a = torch.randn(n, n, device=dev, dtype=torch.float32 if dry else torch.bfloat16)
    ms = timer(dry)(lambda: a @ a)[0]
    return 2 * n ** 3 / ms / 1e9


def bench_row(model, T, provider, dev, dry, peak):
    H, V = MODELS[model]
    if dry:
        H, V, T = 64, 1000, 256
    dt = torch.float32 if dry else torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(T, H, device=dev, generator=g).to(dt)
    w = (torch.randn(V, H, device=dev, generator=g) / math.sqrt(H)).to(dt)
    t = torch.randint(0, V, (T,), device=dev, generator=g)
    from gadx.kernels import token_logprobs
    logp = token_logprobs(h, w, t)
    adv = torch.randn(T, device=dev, generator=g)
    old, ref = logp + 0.05 * torch.randn_like(logp), logp + 0.05 * torch.randn_like(logp)
    mask = torch.rand(T, device=dev, generator=g) > 0.05
    row = {"model": model, "T": T, "H": H, "V": V, "provider": provider}
    try:
        fn = make_provider(provider, dry)
    except ImportError as e:
        return {**row, "skipped": f"not installed: {e}"}
    hh, ww = h.clone().requires_grad_(provider != "ours_logp"), w.clone().requires_grad_(provider != "ours_logp")
    bench = timer(dry)
    try:
        if provider == "ours_logp":
            with torch.no_grad():
                fwd = bench(lambda: fn(hh, ww, t, adv, old, ref, mask))
            total, bwd, flops = fwd, (0.0, 0.0, 0.0), 2 * T * H * V
        else:
            fwd = bench(lambda: fn(hh, ww, t, adv, old, ref, mask))

            def full():
                hh.grad = ww.grad = None
                fn(hh, ww, t, adv, old, ref, mask).backward()
            total = bench(full)
            bwd = tuple(max(0.0, a - b) for a, b in zip(total, fwd))
            flops = 6 * T * H * V
        if dev.type == "cuda":
            hh.grad = ww.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            if provider == "ours_logp":
                with torch.no_grad():
                    fn(hh, ww, t, adv, old, ref, mask)
            else:
                fn(hh, ww, t, adv, old, ref, mask).backward()
            torch.cuda.synchronize()
            row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        n = min(T, 256)
        ref64 = torch.log_softmax(h[:n].double() @ w.double().T, -1).gather(1, t[:n, None])[:, 0]
        ours = token_logprobs(h[:n], w, t[:n]) if provider.startswith("ours") else \
            torch.log_softmax((h[:n] @ w.T).float(), -1).gather(1, t[:n, None])[:, 0]
        row.update(fwd_ms=fwd[0], bwd_ms=bwd[0], total_ms=total[0], total_q20_ms=total[1], total_q80_ms=total[2],
                   tflops=flops / total[0] / 1e9, max_dlogp=(ours.double() - ref64).abs().max().item())
        row["pct_peak"] = 100 * row["tflops"] / peak
    except torch.OutOfMemoryError:
        row["skipped"] = "OOM"
    finally:
        del hh, ww
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return row


def table(rows, device_name, peak):
    lines = [f"device: {device_name}; measured bf16 matmul peak {peak:.0f} TFLOP/s",
             f"{'model':14} {'T':>6} {'provider':10} {'fwd ms':>8} {'bwd ms':>8} {'total ms':>9} {'peak MiB':>9} "
             f"{'TFLOP/s':>8} {'% peak':>7} {'max dlogp':>10}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['model']:14} {r['T']:>6} {r['provider']:10} {r['skipped']}")
            continue
        lines.append(f"{r['model']:14} {r['T']:>6} {r['provider']:10} {r['fwd_ms']:8.1f} {r['bwd_ms']:8.1f} "
                     f"{r['total_ms']:9.1f} {r.get('peak_mib', float('nan')):9.0f} {r['tflops']:8.1f} "
                     f"{r['pct_peak']:7.1f} {r['max_dlogp']:10.2e}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry for a CPU smoke test")
    dev = torch.device("cpu" if args.dry else "cuda")
    name = "cpu (dry run, timings meaningless)" if args.dry else torch.cuda.get_device_name()
    peak = matmul_peak_tflops(dev, args.dry)
    rows = []
    for model in args.models:
        for T in (args.tokens[:1] if args.dry else args.tokens):
            for provider in args.providers:
                if args.dry and provider == "compile":
                    continue  # compiling on CPU needs a C++ toolchain; covered on the GPU run
                rows.append(bench_row(model, T, provider, dev, args.dry, peak))
                print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump({"device": name, "matmul_peak_tflops": peak, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(table(rows, name, peak))


if __name__ == "__main__":
    main()
