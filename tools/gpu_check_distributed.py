"""GPU check of the GAD step at TP=1 (one H100/H200, < 8 minutes): a few GAD steps of a
Qwen2.5-0.5B-shaped student and discriminator (random weights), then the update's
forward+backward alone in bf16 and, where Transformer Engine is importable, in FP8.

    python tools/gpu_check_distributed.py                  # on the GPU machine
    python tools/gpu_check_distributed.py --dry-run        # CPU, tiny shapes, < 60 s: checks the code paths only
                                                            # (and the step's forwards/backward on gadx plan's fake GPU)

On the lent machine (torch 2.11, Python 3.12; no megatron-core, TE or flash-attn), carry
megatron-core as a wheel (see /work/.library/device/README.md), from the repo root here:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl megatron-core==0.16.1
    # there (carry [".whl"]):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site && python3 -m pip install -q --no-deps --no-build-isolation -e . \
      && PYTHONUNBUFFERED=1 python3 tools/gpu_check_distributed.py --out $OUT/gpu_check_distributed.json

Part 1 (``gadx.train.run_steps``, the real trainer; synthetic world, embedded teacher served
on localhost): per step the rollout / scoring / update seconds the trainer logs, update
tokens/s, rollout tokens/s, and the update's model FLOPs utilisation
MFU = 6 * N * update_tokens / time_update / peak, N = all parameters (the tied embedding
counted once, as the LM head matmul), attention FLOPs left out (sequences are short),
peak = 989 TFLOP/s (dense bf16, H100/H200 SXM). The trainer has no dtype or fp8 setting yet:
it runs fp32 weights (TF32 matmuls are enabled here), so its MFU is against the bf16 peak
on purpose (what a bf16 trainer could reach). The student uses the world tokenizer's small
vocabulary (700), so N is the 0.5B backbone (24 layers, hidden 896) without the 152k-row
embedding.

Part 2 (model only): forward+backward of the student on packed micro-batches of 8192
tokens, bf16 local spec, and TE bf16 / TE FP8 (tensorwise) when TE is importable:
tokens/s and MFU per row. Without TE it prints that FP8 was skipped, never a bf16 number
under an FP8 label.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

PEAK_BF16 = 989e12
SHAPES = {  # hidden, ffn, layers, heads, kv heads, head dim
    "gpu": (896, 4864, 24, 14, 2, 64),
    "dry": (32, 64, 2, 2, 1, 16),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the code paths, no timing value")
    p.add_argument("--steps", type=int, default=4, help="GAD steps (the first includes warm-up and is reported apart)")
    p.add_argument("--out", default="gpu_check_distributed.json")
    return p.parse_args(argv)


def make_folders(root: Path, dry: bool):
    from gadx.models import ModelConfig, build_model, save_pretrained
    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    tok = train_sentencepiece(World(seed=0).corpus(), root / "tok", 700, chat_template="llama3")
    H, F, L, nh, nkv, hd = SHAPES["dry" if dry else "gpu"]
    mc = ModelConfig(family="qwen2", vocab_size=tok.vocab_size, hidden_size=H, intermediate_size=F, num_layers=L,
                     num_heads=nh, num_kv_heads=nkv, head_dim=hd, rope_theta=1e6, tie_embeddings=True, qkv_bias=True,
                     max_position_embeddings=1024, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
                     pad_token_id=tok.pad_id)
    g = build_model(mc, seed=1)
    n_params = sum(p.numel() for p in g.parameters())
    save_pretrained(g, root / "student")
    tok.save(root / "student")
    save_pretrained(build_model(mc, head="score", seed=2), root / "disc")
    del g
    return mc, n_params


def gad_steps(root: Path, steps: int, dry: bool, n_params: int) -> dict:
    from gadx.train import run_steps
    from gadx.train.config import load_config

    sets = {
        "run.progress": "false", "run.tensorboard": "false", "run.eval_every": "0", "run.out_dir": str(root / "run"),
        "data.held_out_size": "4", "stages.gad.d_acc_gate": "0.0",
        "stages.prompts_per_step": "4" if dry else "32", "stages.n_samples": "2" if dry else "8",
        "stages.max_prompt_len": "48" if dry else "128", "stages.max_response_len": "12" if dry else "128",
        "parallel.micro_batch_tokens": "256" if dry else "8192",
    }
    argv = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    cfg, _ = load_config(argv)
    t0 = time.perf_counter()
    rows = run_steps(cfg, steps, student=root / "student", discriminator=root / "disc")
    wall = time.perf_counter() - t0
    out = []
    for r in rows:
        update_tokens = r["tokens_per_s"] * r["time/step"]
        out.append({
            "step": r["step"], "time_step_s": r["time/step"], "time_rollout_s": r["time/rollout"],
            "time_scoring_s": r["time/scoring"], "time_update_s": r["time/update"],
            "update_tokens": update_tokens, "tokens_per_s": r["tokens_per_s"],
            "rollout_tokens_per_s": r.get("rollout_tokens_per_s", float("nan")),
            "update_mfu": 6 * n_params * update_tokens / r["time/update"] / PEAK_BF16,
        })
    return {"rows": out, "wall_s": wall}


def fake_gpu_step(mc, dry: bool) -> dict:
    """The same GAD step shapes on gadx plan's fake GPU (gadx.plan.plan_rank): every forward, backward
    and optimizer step on fake device tensors, so a tensor built on the CPU fails here even on a
    CPU-only machine (the CPU adapter path above keeps everything on the CPU and cannot see it)."""
    from gadx.parallel import current_parallel, destroy_parallel
    from gadx.plan import plan_rank
    from gadx.train.config import load_config

    if current_parallel() is not None:
        destroy_parallel()
    sets = {"stages.prompts_per_step": "4" if dry else "32", "stages.n_samples": "2" if dry else "8",
            "stages.max_prompt_len": "48" if dry else "128", "stages.max_response_len": "12" if dry else "128",
            "parallel.micro_batch_tokens": "256" if dry else "8192", "data.held_out_size": "4"}
    cfg, _ = load_config([x for k, v in sets.items() for x in ("--set", f"{k}={v}")])
    r = plan_rank(cfg, mc, world=1, rank=0, max_microbatches=2)
    return {"device": r.device, "peak_bytes": r.peak, "peak_phase": r.peak_phase, "host_reads": r.host_reads}


def update_bench(mc, dry: bool) -> list[dict]:
    from gadx.models import build_model
    from gadx.models.spec import te_available
    from gadx.parallel import current_parallel, destroy_parallel, init_parallel

    if current_parallel() is not None:
        destroy_parallel(keep_process_group=True)
    dims = init_parallel(1, 1)
    T = 256 if dry else 8192
    n_mb = 2 if dry else 4
    dtype = torch.float32 if dry else torch.bfloat16
    label = str(dtype).removeprefix("torch.")
    variants = [(f"{label} local spec", False, None)]
    if te_available():
        variants += [(f"{label} TE spec", True, None), ("fp8 tensorwise (TE)", True, "tensorwise")]
    else:
        print("transformer_engine is not importable: the TE and FP8 rows are skipped")
    rows = []
    for name, use_te, fp8 in variants:
        model = build_model(mc, parallel=dims, dtype=dtype, use_te=use_te, fp8=fp8, seed=0)
        n_params = sum(p.numel() for p in model.parameters())
        ids_BT = torch.randint(0, mc.vocab_size, (1, T), device=dims.device)
        doc_ids_BT = (torch.arange(T, device=dims.device) // 512)[None]  # packed 512-token documents

        def step():
            for _ in range(n_mb):
                hidden_BTH = model.hidden(ids_BT, doc_ids_BT=doc_ids_BT)
                logits_BTV = model.head_input(hidden_BTH) @ model.head_weight.t()
                logits_BTV.float().logsumexp(-1).mean().backward()

        step()  # warm-up (TE / cuBLAS autotuning)
        times = []
        for _ in range(1 if dry else 5):
            if dims.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if dims.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        dt = statistics.median(times)
        tokens = n_mb * T
        rows.append({"variant": name, "tokens": tokens, "step_s": dt, "tokens_per_s": tokens / dt,
                     "mfu": 6 * n_params * tokens / dt / PEAK_BF16, "params": n_params})
        del model
    return rows


def main(argv=None) -> int:
    import warnings

    warnings.simplefilter("ignore")
    from gadx.plan.fakedev import register

    register()  # the fake GPU must exist before the first backward (autograd sizes its device queues then)
    a = parse_args(argv)
    if not a.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --dry-run on a CPU machine")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mc, n_params = make_folders(root, a.dry_run)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"device: {device}; student {n_params / 1e6:.1f}M params ({mc.num_layers} layers, hidden {mc.hidden_size}, vocab {mc.vocab_size})")
        gad = gad_steps(root, a.steps, a.dry_run, n_params)
        print("\nGAD steps (gadx.train.run_steps, TP=1, fp32 weights + TF32):")
        print(f"{'step':>4} {'step s':>7} {'rollout':>8} {'scoring':>8} {'update':>7} {'upd tok/s':>10} {'roll tok/s':>10} {'upd MFU':>8}")
        for r in gad["rows"]:
            print(f"{r['step']:>4} {r['time_step_s']:7.2f} {r['time_rollout_s']:8.2f} {r['time_scoring_s']:8.2f} "
                  f"{r['time_update_s']:7.2f} {r['tokens_per_s']:10.0f} {r['rollout_tokens_per_s']:10.0f} {r['update_mfu']:8.1%}")
        fake = fake_gpu_step(mc, a.dry_run)
        print(f"\nfake-GPU dry run of the step (gadx plan): device {fake['device']}, predicted peak "
              f"{fake['peak_bytes'] / 2**20:.1f} MiB in {fake['peak_phase']}; host reads: {fake['host_reads']}")
        bench = update_bench(mc, a.dry_run)
        print("\nStudent forward+backward alone (packed micro-batches):")
        for r in bench:
            print(f"  {r['variant']:<22} {r['tokens']:>6} tokens  {r['step_s'] * 1e3:8.1f} ms  "
                  f"{r['tokens_per_s']:10.0f} tok/s  MFU {r['mfu']:.1%}")
    result = {"device": device, "dry_run": a.dry_run, "params": n_params, "gad": gad, "update_bench": bench,
              "fake_gpu_step": fake,
              "wall_s": time.perf_counter() - t0}
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"\nwall {result['wall_s']:.0f} s; JSON in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
