"""`gadx plan`: will a recipe fit the GPUs? One GAD step of the real trainer on fake tensors.

    gadx plan --config recipes/qwen2_5_7b_8xh100.toml --gpus 8 --gpu-mem 80GB
    gadx plan --config recipes/tiny.toml --set parallel.tp=2 --set parallel.pp=2 --set model.num_kv_heads=2 --gpus 4

For one representative rank of each pipeline stage (TP rank 0, DP rank 0) it builds the
student, discriminator (by discriminator.kind, as the trainer does: a score head, or with
--set discriminator.kind=implicit a whole LM), reference, optimizers and rollout sampler at the recipe's sizes and
layout on a fake GPU (nothing is allocated), runs one GAD step with the recipe's batch at
worst-case lengths (every prompt ``max_prompt_len``, every reply ``max_response_len``), and
prints the per-GPU peak by component against ``--gpu-mem``, then a VERDICT line.
Exit status 0 when it fits, 1 when it does not, 2 on a usage error. See docs/dry_run.md.

Options (besides the trainer's --config FILE / --set key=value):
  --gpus N           world size (default 8); DP = N / (TP * PP)
  --gpu-mem SIZE     memory of one card, e.g. 80GB (H100), 141GB (H200); default 80GB
  --model NAME|DIR   the student's shapes: an HF folder or a preset name (gadx/plan/presets.py);
                     default: model.student when it is a folder, else its preset by name
  --ranks first|all  plan only stage 0, or one rank per stage (default all)
  --decode-steps K   decode steps per sampler call (default 2; memory does not grow with K)
  --microbatches K   run the first K micro-batches of each schedule pass (and sampler calls)
                     through the model, the rest get zero outputs (default 2; 0 = all). Exact
                     for memory at the plan's worst-case lengths, where every micro-batch of a
                     pass is equally full; 0 costs minutes per micro-batch at 7B on 2 CPU cores
  --json FILE        also write the numbers as JSON
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path


def model_config(cfg, name: str = ""):
    from gadx.models import ModelConfig
    from gadx.train.config import EMBEDDED

    from .presets import PRESETS, preset

    src = name or cfg.model.student
    if src == EMBEDDED:
        m = cfg.model
        return ModelConfig(family="qwen2", vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                           intermediate_size=m.intermediate_size, num_layers=m.num_layers, num_heads=m.num_heads,
                           num_kv_heads=m.num_kv_heads, head_dim=m.hidden_size // m.num_heads, rope_theta=10000.0,
                           tie_embeddings=True, qkv_bias=True,
                           max_position_embeddings=cfg.stages.max_prompt_len + cfg.stages.max_response_len,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if (Path(src) / "config.json").is_file():
        return ModelConfig.from_pretrained(src)
    found = preset(src)
    if found is None:
        raise ValueError(f"model {src!r} is neither an HF folder with config.json nor a preset "
                         f"({', '.join(PRESETS)}): pass --model")
    return found


def representative_ranks(tp: int, pp: int, world: int, which: str) -> list[int]:
    """TP rank 0 / DP rank 0 of each stage, in megatron's default order (tp fastest, then dp, then pp)."""
    dp = world // (tp * pp)
    stages = range(pp) if which == "all" else range(1)
    return [s * tp * dp for s in stages]


def main(argv: list[str] | None = None) -> int:
    from gadx.train.config import load_config

    from .report import parse_bytes, table

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    p = argparse.ArgumentParser(prog="gadx plan", add_help=False)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--gpu-mem", default="80GB")
    p.add_argument("--model", default="")
    p.add_argument("--ranks", choices=("first", "all"), default="all")
    p.add_argument("--decode-steps", type=int, default=2)
    p.add_argument("--microbatches", type=int, default=2)
    p.add_argument("--json", default="")
    try:
        cfg, rest = load_config(argv)
        a = p.parse_args(rest)
        gpu_mem = parse_bytes(a.gpu_mem)
        mcfg = model_config(cfg, a.model)
        tp, pp = cfg.parallel.tp, cfg.parallel.pp
        if a.gpus < 1 or a.gpus % (tp * pp):
            raise ValueError(f"--gpus {a.gpus} is not a multiple of tp*pp = {tp}*{pp}")
        mcfg.check_parallel(tp)
    except (ValueError, SystemExit) as e:
        print(f"gadx plan: {e}", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")
    from .dryrun import plan_rank
    from .fakedev import register

    register()

    dp = a.gpus // (tp * pp)
    n_params = _params(mcfg)
    print(f"gadx plan: {mcfg.family} student, {n_params / 1e9:.2f}B params ({mcfg.num_layers} layers, hidden "
          f"{mcfg.hidden_size}, vocab {mcfg.vocab_size}), {cfg.model.dtype}; {a.gpus} GPUs as TP={tp} x PP={pp} x DP={dp}; "
          f"{cfg.stages.prompts_per_step} prompts x {cfg.stages.n_samples} samples per step, "
          f"{cfg.stages.max_prompt_len}+{cfg.stages.max_response_len} tokens, micro-batch {cfg.parallel.micro_batch_tokens} tokens; "
          f"discriminator.kind={cfg.discriminator.kind}", flush=True)
    plans = []
    t0 = time.perf_counter()
    for rank in representative_ranks(tp, pp, a.gpus, a.ranks):
        plans.append(plan_rank(cfg, mcfg, world=a.gpus, rank=rank, decode_steps=a.decode_steps,
                               max_microbatches=a.microbatches,
                               log=lambda m: print(f"  {m}", flush=True)))
    text, fits = table(plans, gpu_mem, title="")
    print()
    print(text)
    reads = sorted({r for pl in plans for r in pl.host_reads})
    print("host reads inside the step (device -> host): " + ("; ".join(reads) if reads else "none"))
    print(f"planned in {time.perf_counter() - t0:.0f} s on fake tensors (nothing allocated)")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "gpus": a.gpus, "gpu_mem": gpu_mem, "fits": fits, "params": n_params, "d_kind": cfg.discriminator.kind,
            "ranks": [{"rank": pl.rank, "pp_rank": pl.pp_rank, "peak": pl.peak, "peak_phase": pl.peak_phase,
                       "components": pl.components, "phases": pl.phases, "host_reads": pl.host_reads,
                       "seconds": pl.seconds} for pl in plans]}, indent=1))
    return 0 if fits else 1


def _params(m) -> int:
    H, I, L, V = m.hidden_size, m.intermediate_size, m.num_layers, m.vocab_size
    q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
    per_layer = H * (q + 2 * kv) + q * H + 3 * H * I + 2 * H + (q + 2 * kv if m.qkv_bias else 0)
    return L * per_layer + V * H * (1 if m.tie_embeddings else 2) + H


if __name__ == "__main__":
    raise SystemExit(main())
