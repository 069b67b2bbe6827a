"""One rank of the implicit-D layout check: steps_worker's GAD steps with discriminator.kind=implicit
(D starts as the student itself, so its first scores are 0), at each layout given (TPxPP; DP is
what the world size leaves); rows to OUT/<layout>/rows.json by global rank 0.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/implicit_worker.py STUDENT OUT 2x1 1x2 1x1
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    import torch.distributed as dist

    from gadx.parallel import destroy_parallel
    from gadx.train import run_steps
    from steps_worker import STEPS, config

    student, out_root, layouts = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    world = int(os.environ["WORLD_SIZE"])
    for i, layout in enumerate(layouts):
        tp, pp = map(int, layout.split("x"))
        sub = out_root / f"implicit-tp{tp}pp{pp}dp{world // (tp * pp)}"
        rows = run_steps(config(sub, tp, pp, {"discriminator.kind": "implicit"}), STEPS, student=student, discriminator=student)
        if dist.get_rank() == 0:
            (sub / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
        destroy_parallel(keep_process_group=i < len(layouts) - 1)
