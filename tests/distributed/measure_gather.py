"""Measure gather_hf_state_dict (rollout weight sync under TP/PP) on this machine.

    python tests/distributed/measure_gather.py            # spawns 2 ranks: TP2, then PP2

Model: Qwen2-shaped, hidden 1024, 8 layers, vocab 32000, bf16 (~123M params, 246 MB).
Prints, per layout, the median of 5 gathers (seconds), the bytes gathered, and the
resident-memory growth of rank 0 while holding the gathered dict.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

LAYOUTS = ("2x1", "1x2")


def rank_main() -> None:
    import psutil

    from gadx.models import ModelConfig, build_model
    from gadx.parallel import destroy_parallel, gather_hf_state_dict, init_parallel

    cfg = ModelConfig(family="qwen2", vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_layers=8,
                      num_heads=16, num_kv_heads=4, head_dim=64, qkv_bias=True, tie_embeddings=False,
                      max_position_embeddings=512)
    proc = psutil.Process()
    out = {}
    for i, layout in enumerate(LAYOUTS):
        tp, pp = map(int, layout.split("x"))
        dims = init_parallel(tp, pp)
        model = build_model(cfg, parallel=dims, dtype=torch.bfloat16, init_weights=False)
        times = []
        for _ in range(5):
            rss0 = proc.memory_info().rss
            t0 = time.perf_counter()
            sd = gather_hf_state_dict(model)
            times.append(time.perf_counter() - t0)
            grown = proc.memory_info().rss - rss0
            nbytes = sum(t.numel() * t.element_size() for t in sd.values())
            del sd
        out[layout] = {"gather_s_median": sorted(times)[2], "bytes": nbytes, "rss_growth_bytes": grown,
                       "params": nbytes // 2}
        del model
        destroy_parallel(keep_process_group=i < len(LAYOUTS) - 1)
    if int(os.environ["RANK"]) == 0:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    if "RANK" in os.environ:
        rank_main()
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from launch import launch

        logs = launch(Path(__file__), [], 2, timeout=900)
        print(logs[0][logs[0].index("{"):])
