"""GPU check of the trainer's GAD step and of the fake-tensor plan (one H100/H200, ~2 minutes).

    python tools/gpu_check_step.py --out $OUT            # on the GPU machine (gpu_check.sh runs it)
    python tools/gpu_check_step.py --dry-run             # CPU: the same code paths at tiny shapes

Three parts, each guarded (an error becomes its part's "error" entry; the others still run),
then one JSON summary, printed last and written to OUT/gpu_check_step.json (with the packed
attention kernels that ran and how often: flash-attn's varlen kernel or per-document SDPA):

  kernels   gadx.kernels compiled by Triton for the GPU (backend="triton") against the float64
            reference: token log-probs and the GRPO loss's gradients in bf16, with the criterion
            of tests/kernels/test_gpu.py (|ours - fp64| <= 1.5 |eager bf16 - fp64| + atol)
  estimate  `gadx plan`'s dry run (gadx.plan.plan_rank) of one GAD step of a Qwen2.5-0.5B-shaped
            student, bf16, on fake tensors: the predicted peak of device memory
  step      the same GAD step on the real device (the trainer's models, DDP, distributed
            optimizer, packing, losses, megatron schedule; the rollout's decode loop fixed-length
            as in the plan): wall time and torch.cuda.max_memory_allocated, compared with the
            estimate (ok within 10%)

--dry-run (no GPU): Triton's interpreter for the kernels (TRITON_INTERPRET=1), the estimate on
the fake GPU (every forward, backward and optimizer step of the step on fake ``fakecuda``
tensors: a CPU tensor meeting the model's device raises there, which the CPU adapter path
cannot show), and the "step" on real CPU tensors measured by MemTracker instead of CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

if "--dry-run" in sys.argv:  # the interpreter must be chosen before Triton kernels are defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

GiB = 1 << 30


def _guard(name: str, fn, out: dict) -> None:
    t0 = time.perf_counter()
    try:
        out[name] = fn()
    except Exception as e:  # one part's failure must not hide the others
        out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    out[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {json.dumps({k: v for k, v in out[name].items() if k != 'traceback'})}", flush=True)


def kernels(dry: bool) -> dict:
    """Triton kernels vs float64, next to eager bf16 vs float64."""
    from gadx.kernels import grpo_loss, token_logprobs
    from gadx.kernels.reference import reference_grpo_loss, reference_token_logprobs

    dev = "cpu" if dry else "cuda"
    T, H, V = (64, 32, 257) if dry else (1024, 1024, 32771)
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(T, H, device=dev, generator=g).bfloat16()
    w = (torch.randn(V, H, device=dev, generator=g) / H ** 0.5 * 3).bfloat16()
    t = torch.randint(0, V, (T,), device=dev, generator=g)
    ref = reference_token_logprobs(h.cpu(), w.cpu(), t.cpu()).to(dev)
    ours = token_logprobs(h, w, t, backend="triton")
    eager = torch.log_softmax((h @ w.T).float(), -1).gather(1, t[:, None])[:, 0]
    lp_err, lp_eager = (ours.double() - ref).abs().max().item(), (eager.double() - ref).abs().max().item()

    logp = ref.float().cpu()
    adv, old = torch.randn(T), logp + 0.2 * torch.randn(T)
    rl, mask = logp + 0.1 * torch.randn(T), torch.rand(T) > 0.1
    h64, w64 = h.cpu().double().requires_grad_(), w.cpu().double().requires_grad_()
    reference_grpo_loss(h64, w64, t.cpu(), adv, old, rl, mask, kl_coef=0.01)[0].backward()
    adv, old, rl, mask = adv.to(dev), old.to(dev), rl.to(dev), mask.to(dev)
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    grpo_loss(hh, ww, t, adv, old, rl, mask, kl_coef=0.01, backend="triton")[0].backward()
    he, we = h.clone().requires_grad_(), w.clone().requires_grad_()
    lp = torch.log_softmax((he @ we.T).float(), -1).gather(1, t[:, None])[:, 0]
    ratio = torch.exp(lp - old)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    d = rl - lp
    kl = (torch.exp(d) - d - 1).clamp(-10, 10)
    ((pg + 0.01 * kl) * mask).sum().div(mask.sum()).backward()
    out = {"shape_T_H_V": [T, H, V], "backend": "triton" + (" (interpreter)" if dry else ""),
           "logp_max_err": lp_err, "logp_eager_bf16_err": lp_eager}
    ok = lp_err <= 1.5 * lp_eager + 1e-5
    for name, o, e, want in (("d_hidden", hh.grad, he.grad, h64.grad), ("d_weight", ww.grad, we.grad, w64.grad)):
        want = want.to(dev)
        err, err_e = (o.double() - want).abs().max().item(), (e.double() - want).abs().max().item()
        out[f"{name}_max_err"], out[f"{name}_eager_bf16_err"] = err, err_e
        ok &= err <= 1.5 * err_e + 1e-6
    out["ok"] = bool(ok)
    return out


def step_config(dry: bool):
    from gadx.models import ModelConfig
    from gadx.train.config import load_config

    if dry:
        mc = ModelConfig(family="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
                         max_position_embeddings=256, eos_token_id=2)
        sets = {"stages.prompts_per_step": 4, "stages.n_samples": 2, "stages.max_prompt_len": 32,
                "stages.max_response_len": 16, "parallel.micro_batch_tokens": 256}
    else:  # Qwen2.5-0.5B's shapes
        mc = ModelConfig(family="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                         num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
                         max_position_embeddings=4096, eos_token_id=151645)
        sets = {"stages.prompts_per_step": 8, "stages.n_samples": 4, "stages.max_prompt_len": 256,
                "stages.max_response_len": 256, "parallel.micro_batch_tokens": 4096}
    sets |= {"model.dtype": "bfloat16", "stages.rollout_prompts_per_call": 4, "data.held_out_size": 4,
             "run.eval_size": 4, "run.eval_limit": 4}
    cfg, _ = load_config([x for k, v in sets.items() for x in ("--set", f"{k}={v}")])
    return cfg, mc


def estimate(dry: bool) -> dict:
    from gadx.plan import plan_rank

    cfg, mc = step_config(dry)
    r = plan_rank(cfg, mc, world=1, rank=0, fake=True)
    return {"device": r.device, "peak_bytes": r.peak, "peak_gib": r.peak / GiB, "peak_phase": r.peak_phase,
            "components": r.components, "phase_peaks": {k: v["peak"] for k, v in r.phases.items()},
            "host_reads": r.host_reads}


def step(dry: bool, est: dict) -> dict:
    from gadx.plan import plan_rank

    cfg, mc = step_config(dry)
    r = plan_rank(cfg, mc, world=1, rank=0, fake=False)
    measured = r.cuda_max_allocated if r.device.startswith("cuda") else r.peak
    out = {"device": r.device, "seconds": r.seconds, "tracker_peak_bytes": r.peak,
           "measured_peak_bytes": measured, "measured_by": "torch.cuda.max_memory_allocated" if r.device.startswith("cuda")
           else "MemTracker on real CPU tensors", "metrics": r.metrics,
           "phase_peaks": {k: v["peak"] for k, v in r.phases.items()}}
    if "peak_bytes" in est:
        out["estimate_error"] = (est["peak_bytes"] - measured) / measured
        out["ok"] = abs(out["estimate_error"]) <= 0.10
    return out


def main(argv=None) -> int:
    import warnings

    warnings.simplefilter("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a, _ = p.parse_known_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run on a CPU machine")
    try:  # before the first backward (the kernels part): autograd sizes its device queues then
        from gadx.plan.fakedev import register

        register()
    except Exception as e:  # an older torch without the Python PrivateUse1 hooks: "estimate" reports it
        print(f"gpu_check_step: the fake GPU is unavailable here: {type(e).__name__}: {e}", flush=True)
    t0 = time.perf_counter()
    res: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__, "dry_run": a.dry_run}
    _guard("kernels", lambda: kernels(a.dry_run), res)
    _guard("estimate", lambda: estimate(a.dry_run), res)
    from gadx.models.varlen import backend_calls

    backend_calls.clear()  # count the real step's packed-attention calls only (the estimate ran on fake tensors)
    _guard("step", lambda: step(a.dry_run, res["estimate"]), res)
    res["attention_backends"] = dict(backend_calls)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["ok"] = all(res[k].get("ok", "error" not in res[k]) for k in ("kernels", "estimate", "step"))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "gpu_check_step.json").write_text(json.dumps(res, indent=1))
    summary = {"device": res["device"], "torch": res["torch"], "ok": res["ok"], "wall_s": res["wall_s"],
               "kernels_ok": res["kernels"].get("ok"), "estimate_gib": res["estimate"].get("peak_gib"),
               "measured_gib": (res["step"].get("measured_peak_bytes") or 0) / GiB,
               "estimate_error": res["step"].get("estimate_error"), "step_s": res["step"].get("seconds"),
               "attention_backends": res["attention_backends"],
               "errors": {k: res[k]["error"] for k in ("kernels", "estimate", "step") if "error" in res[k]}}
    print("GPU_CHECK_STEP " + json.dumps(summary), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
