"""What the CPU adapter's ``cpu_device_mode`` costs (gadx/parallel/cpu_adapter.py):

    python benchmarks/cpu_adapter_overhead.py

Microseconds per small torch call and milliseconds per forward+backward of a tiny GadxModel
(2 layers, H=64, batch 8 x 128 tokens), with and without the mode, the minimum over ``repeats``
interleaved so that machine load hits both alike. A script, not a pytest benchmark: the figure is
the mode's own overhead, with no peer to compare against. It lives here rather than in
gadx.parallel because it builds a model (gadx.models imports gadx.parallel, not the reverse).
"""
from __future__ import annotations

import contextlib
import time
import warnings

import torch


def measure_overhead(n_calls: int = 20000, repeats: int = 5) -> dict[str, float]:
    from gadx.models import ModelConfig, build_model
    from gadx.parallel import cpu_adapter, init_parallel

    init_parallel()
    cfg = ModelConfig(family="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True)
    model = build_model(cfg)
    ids_BT = torch.randint(0, 512, (8, 128))
    x = torch.randn(8, 8)

    def calls():
        for _ in range(n_calls):
            torch.add(x, 1.0)

    def step():
        model.logits(ids_BT).float().logsumexp(-1).mean().backward()

    best = {"call_plain": 1e9, "call_mode": 1e9, "step_plain": 1e9, "step_mode": 1e9}
    step()
    for _ in range(repeats):
        for name, fn, scale in (("call", calls, 1e6 / n_calls), ("step", step, 1e3)):
            for mode in ("plain", "mode"):
                t0 = time.perf_counter()
                # the mode itself, also where the adapter is off (a CUDA machine): its cost is the question
                with (cpu_adapter._CpuDeviceMode() if mode == "mode" else contextlib.nullcontext()):
                    fn()
                best[f"{name}_{mode}"] = min(best[f"{name}_{mode}"], (time.perf_counter() - t0) * scale)
    return {
        "us_per_torch_call_plain": best["call_plain"],
        "us_per_torch_call_in_mode": best["call_mode"],
        "ms_per_fwd_bwd_plain": best["step_plain"],
        "ms_per_fwd_bwd_in_mode": best["step_mode"],
    }


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for k, v in measure_overhead().items():
        print(f"{k}: {v:.3f}")
