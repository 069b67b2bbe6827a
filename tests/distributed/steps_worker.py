"""One rank of the layout-equality check: 3 GAD steps (gadx.train.run_steps) from the same HF
student / discriminator folders and seed, at each layout given, rows written to
OUT/<layout>/rows.json by global rank 0. A layout is TPxPP; the data-parallel size is what
the world size leaves (world 2 with 1x1 = DP2). A trailing g / s (2x1s) evaluates greedily
at step 0, with rollouts gathered / sharded over TP (parallel.rollout). A trailing c (1x1c)
checkpoints every step and stops after step 2 (OUT/<layout>-stop2); a trailing r (2x1r)
resumes from the checkpoints found in OUT/<layout>-resumed/gad/checkpoints (put there by the
test) and runs the remaining steps.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/steps_worker.py STUDENT DISC OUT 2x1 1x2 1x1
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

STEPS = 3

SETTINGS = {
    "run.progress": "false", "run.tensorboard": "false", "run.eval_every": "0", "run.seed": "3",
    "data.held_out_size": "4",
    "stages.prompts_per_step": "4", "stages.n_samples": "2", "stages.rollout_prompts_per_call": "2",
    "stages.max_prompt_len": "48", "stages.max_response_len": "12",
    "stages.gad.d_acc_gate": "0.0",
    "parallel.micro_batch_tokens": "256",
}


def config(out: Path, tp: int, pp: int, extra: dict | None = None):
    from gadx.train.config import load_config

    argv = []
    for k, v in {**SETTINGS, "run.out_dir": str(out), "parallel.tp": str(tp), "parallel.pp": str(pp), **(extra or {})}.items():
        argv += ["--set", f"{k}={v}"]
    cfg, rest = load_config(argv)
    assert not rest
    return cfg


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    import torch.distributed as dist

    from gadx.parallel import destroy_parallel
    from gadx.train import run_steps

    student, disc, out_root, layouts = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    for i, layout in enumerate(layouts):
        mode = layout[-1] if layout[-1] in "gsrc" else ""
        rollout = {"g": "gathered", "s": "sharded"}.get(mode)
        tp, pp = map(int, layout.rstrip("gsrc").split("x"))
        world = int(os.environ["WORLD_SIZE"])
        suffix = {"g": "-gathered", "s": "-sharded", "c": "-stop2", "r": "-resumed"}.get(mode, "")
        sub = out_root / (f"tp{tp}pp{pp}dp{world // (tp * pp)}" + suffix)
        extra = None
        if rollout:  # greedy evaluation at step 0 only (before any update): what the sharded check compares
            extra = {"parallel.rollout": rollout, "run.eval_every": "1000", "run.eval_limit": "4"}
        if mode == "c":
            extra = {"run.max_steps": "2"}
        rows = run_steps(config(sub, tp, pp, extra), STEPS, student=student, discriminator=disc,
                         checkpoint_every=1 if mode in ("c", "r") else 0)
        if dist.get_rank() == 0:
            (sub / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
