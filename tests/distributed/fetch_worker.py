"""One rank of the trainer's one-fetch-per-job check: 2 GAD steps (gadx.train.run_steps) at
TP=2 then at DP=2 in one 2-process launch, each against its own stochastic teacher URL
(tests/distributed/stochastic_teacher.py). Every rank records the batches it trained on
(prompt ids, teacher reply ids, its share) to OUT/<layout>/rank{R}.json.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/fetch_worker.py STUDENT DISC OUT URL_TP2 URL_DP2
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import steps_worker

STEPS = 2

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    import torch.distributed as dist

    from gadx.parallel import destroy_parallel
    from gadx.train import run_steps
    from gadx.train.trainer import Run

    student, disc, out_root, url_tp, url_dp = sys.argv[1:6]
    seen: list[dict] = []
    next_batch = Run._next_batch

    def recording(self, step):
        b = next_batch(self, step)
        seen.append({"prompts": b.prompts, "teacher": b.teacher, "first": b.first, "P": b.global_prompts,
                     "tp_rank": self.dims.tp_rank, "dp_rank": self.dims.dp_rank})
        return b

    Run._next_batch = recording
    # an unreachable teacher: rank 0 alone tries it; every rank must raise, none wait for rank 0
    from gadx.train.env import Env

    try:
        Env(steps_worker.config(Path(out_root) / "unreachable", 2, 1, {"teacher.base_url": "http://127.0.0.1:9/v1",
                                                                       "model.student": student}))
        error = None
    except ValueError as e:
        error = str(e)
    (Path(out_root) / f"unreachable-rank{dist.get_rank()}.txt").write_text(str(error))
    destroy_parallel(keep_process_group=True)
    layouts = [("tp2", 2, url_tp), ("dp2", 1, url_dp)]
    for i, (name, tp, url) in enumerate(layouts):
        sub = Path(out_root) / name
        seen.clear()
        cfg = steps_worker.config(sub, tp, 1, {"teacher.base_url": url, "teacher.temperature": "1.0",
                                                   "stages.sft_prompts_per_step": "0"})
        rows = run_steps(cfg, STEPS, student=student, discriminator=disc)
        (sub / f"rank{dist.get_rank()}.json").write_text(json.dumps({"batches": seen, "rows": rows}, default=str))
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
