"""Peak extra memory of the GRPO loss (forward + backward) against T and V: gadx, eager PyTorch, Liger.

    python benchmarks/bench_loss_memory.py                # the table of benchmarks/README.md (minutes, ~4 GB)
    GADX_BENCH_RESULTS=1 pytest benchmarks/bench_loss_memory.py   # + benchmarks/results/loss_memory.json
    pytest benchmarks/bench_loss_memory.py -s             # the same grid, rows via ``record``
    GADX_BENCH_SMOKE=1 pytest benchmarks/bench_loss_memory.py   # seconds: one tiny shape

What it shows: gadx's fused loss never holds more than ONE CHUNK of fp32 logits, but a chunk
is sized by a byte budget (64 MiB on CPU, 2 GiB on CUDA: kernels/chunked.py), so below that
budget the chunk IS the whole [T, V]; and it holds an fp32 [V, H] weight gradient from the
forward pass to the backward pass (plus, during backward, that gradient scaled by the
upstream grad). The bound column is that arithmetic, for the torch backend measured here:
    min(T, C) x V x 4  +  2 x V x H x 4  +  T x H x 4  +  2 x 64 x V x 4
    (one chunk of C tokens; dW and its scaled copy; dX; the torch row kernels' two [64, V]
    temporaries, which the Triton row kernels do not have)
Every provider also returns weight.grad [V, H], which is counted (peak above the inputs).

Each (provider, shape) runs once in a fresh spawned process: inputs built, the kernel's
peak-RSS counter reset (/proc/self/clear_refs "5"), forward + backward, then
peak extra = VmHWM - VmRSS before the call (CPU resident memory, every allocator counted).
Providers, fp32 on CPU:
  gadx 64 MiB  grpo_loss(backend="torch") with the CPU default chunk budget
  gadx 2 GiB   the same with chunk_bytes = 2 GiB, the CUDA default: the bound a GPU user gets
  eager        fp32 logits -> log_softmax -> gather -> GRPO loss + k3 KL, autograd
  liger        liger_kernel.chunked_loss.LigerFusedLinearGRPOLoss(compiled=False), sequences of
               256 tokens (torch.compile is left off: on CPU it would time the compiler, and it
               compiles only the per-token loss math, not the logits path that sets the memory)
A provider whose package is missing is left out of the table (liger: pip install liger-kernel).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import pick  # noqa: E402
from results import Results  # noqa: E402
from results import table as results_table  # noqa: E402

H = pick(full=256, smoke=32)
SEQ = pick(full=256, smoke=16)  # tokens per sequence for Liger's [B, L, H] input
GRID = pick(full=[(512, 32000), (2048, 32000), (512, 152064), (2048, 152064)], smoke=[(64, 517)])
PROVIDERS = ("gadx 64 MiB", "gadx 2 GiB", "eager", "liger")
BUDGET = {"gadx 64 MiB": 64 << 20, "gadx 2 GiB": 2 << 30}
MIB = 2 ** 20


def available(provider: str) -> bool:
    return provider != "liger" or importlib.util.find_spec("liger_kernel") is not None


def bound_mib(provider: str, T: int, V: int) -> float | None:
    """gadx's stated bound (see the module docstring); None for the peers."""
    if provider not in BUDGET:
        return None
    from gadx.kernels.chunked import chunk_tokens

    import torch

    from gadx.kernels.rowwise_torch import ROWS

    C = chunk_tokens(T, V, 0, BUDGET[provider], torch.device("cpu"))
    return (C * V * 4 + 2 * V * H * 4 + T * H * 4 + 2 * min(ROWS, C) * V * 4) / MIB


def _loss(provider: str, h, w, t, adv, old, ref, mask):
    if provider in BUDGET:
        from gadx.kernels import grpo_loss

        return grpo_loss(h, w, t, adv, old, ref, mask, kl_coef=0.001, backend="torch",
                         chunk_bytes=BUDGET[provider])[0]
    if provider == "eager":
        from bench_kernels import eager_loss

        return eager_loss(h, w, t, adv, old, ref, mask)
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    T = h.shape[0]
    B = T // SEQ
    fn = LigerFusedLinearGRPOLoss(beta=0.001, compiled=False, use_ref_model=True, loss_type="grpo")
    adv_B = adv.view(B, SEQ)[:, 0].contiguous()  # GRPO: one advantage per sequence
    return fn(h.view(B, SEQ, -1), w, t.view(B, SEQ), mask.view(B, SEQ).long(), adv_B,
              ref_per_token_logps=ref.view(B, SEQ), old_per_token_logps=old.view(B, SEQ))[0]


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(providers: list[str], T: int, V: int, q) -> None:
    from bench_kernels import make_inputs

    if "liger" in providers:
        import liger_kernel.chunked_loss  # noqa: F401  (imported before the baseline is read)
    h, w, t, adv, old, ref, mask = make_inputs(T, H, V)
    out = {}
    for provider in providers:
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: a spawned child starts at its parent's high-water mark
        base = _status_kib("VmRSS")
        loss = _loss(provider, hh, ww, t, adv, old, ref, mask)
        loss.backward()
        out[provider] = {"peak_mib": (_status_kib("VmHWM") - base) / 1024, "loss": float(loss.detach()),
                         "finite_grads": bool(hh.grad.isfinite().all() and ww.grad.isfinite().all())}
        del hh, ww, loss
    q.put(out)


def measure(providers: list[str], T: int, V: int) -> dict:
    """Peaks of the providers, measured one after another in one fresh process (several in one
    process only at smoke size: memory a provider freed can stay resident and hide the next's)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(providers, T, V, q))
    p.start()
    out = q.get()
    p.join()
    assert p.exitcode == 0, (providers, T, V, p.exitcode)
    return out


def table() -> list[dict]:
    rows = []
    provs = [p for p in PROVIDERS if available(p)]
    for T, V in GRID:
        row = {"T": T, "V": V, "H": H}
        for group in pick(full=[[p] for p in provs], smoke=[provs]):
            row.update(measure(group, T, V))
        for prov in provs:
            row[prov]["bound_mib"] = bound_mib(prov, T, V)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    provs = [p for p in PROVIDERS if p in rows[0]]
    head = "| T | V | [T, V] fp32 | " + " | ".join(provs) + " |"
    lines = [head, "|" + "---|" * (3 + len(provs))]
    for r in rows:
        cells = []
        for p in provs:
            b = r[p]["bound_mib"]
            cells.append(f"{r[p]['peak_mib']:,.0f}" + (f" (bound {b:,.0f})" if b is not None else ""))
        lines.append(f"| {r['T']:,} | {r['V']:,} | {r['T'] * r['V'] * 4 / MIB:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_results(rows: list[dict]) -> Results:
    """The grid as a results file (benchmarks/results.py): eager is each shape's baseline."""
    res = Results("loss_memory", rounds=1, threads=1, H=H, note="peak extra resident memory of one forward + backward, "
                  "each (provider, shape) once in a fresh spawned process; memory does not depend on the load")
    for r in rows:
        shape = f"T={r['T']} V={r['V']} H={r['H']}"
        base = f"eager PyTorch, {shape}"
        res.row(base, [r["eager"]["peak_mib"]], unit="MiB")
        for p in ("gadx 64 MiB", "gadx 2 GiB", "liger"):
            if p in r:
                label = {"gadx 64 MiB": "gadx, 64 MiB chunk budget (CPU default)",
                         "gadx 2 GiB": "gadx, 2 GiB chunk budget (CUDA default)",
                         "liger": "Liger LigerFusedLinearGRPOLoss"}[p]
                res.row(f"{label}, {shape}", [r[p]["peak_mib"]], unit="MiB", baseline=base,
                        stated_bound_mib=r[p]["bound_mib"])
    return res


@pytest.mark.timeout(3600)
def test_loss_peak_memory():
    rows = table()
    for r in rows:
        for p in PROVIDERS:
            if p in r:
                assert math.isfinite(r[p]["loss"]) and r[p]["finite_grads"], (p, r)
                b = r[p]["bound_mib"]
                if b is not None and b >= 16:  # below ~16 MiB allocator and page noise dominates
                    assert r[p]["peak_mib"] <= 1.25 * b, (p, r)  # the documented bound holds
        # same loss formula: gadx and eager agree (Liger's "grpo" normalises per sequence: not compared)
        assert r["gadx 64 MiB"]["loss"] == pytest.approx(r["eager"]["loss"], rel=1e-4, abs=1e-6)
    res = to_results(rows)
    res.write()
    print("\n" + markdown(rows) + "\n\n" + results_table(res.data))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the results file (benchmarks/results.py schema) here")
    a = ap.parse_args(argv)
    res = Results("loss_memory", rounds=1)  # load average before the grid
    rows = table()
    res.data["rows"] = to_results(rows).rows
    res.write()  # where GADX_BENCH_RESULTS says (if it does); sets the load average after
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res.data, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
