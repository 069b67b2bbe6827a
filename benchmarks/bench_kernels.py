"""CPU benchmark: the chunked PyTorch GRPO loss (gadx.kernels, backend="torch") vs torch eager.

    python -m pytest benchmarks/bench_kernels.py -q -s -m 'not slow'  # T=4096, H=512, V=32000
    python -m pytest benchmarks/bench_kernels.py -q -s -m slow      # + T=8192, H=1024, V=65536
    GADX_BENCH_SMOKE=1 python -m pytest benchmarks/bench_kernels.py  # seconds: T=64, H=32, V=517

Eager = fp32 logits -> log_softmax -> gather -> GRPO loss (+ k3 KL), backward.
Ours  = grpo_loss(..., backend="torch"), forward + backward.
Time: median (min-max) wall and CPU time of forward+backward over ``ROUNDS`` = 5 rounds,
the two providers one after the other in each round (test_ratio; pytest-benchmark also
times each provider alone in test_time). ``GADX_BENCH_RESULTS=1`` writes
benchmarks/results/kernels.json (benchmarks/results.py). Peak memory: each provider runs once in a fresh spawned process;
peak extra = VmHWM after the call - VmRSS after the inputs were built, with the
kernel's high-water mark reset in between (resident set, so it counts every allocator).
The GPU table lives in tools/gpu_bench_kernels.py.
"""
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from gadx.kernels import grpo_loss, token_logprobs

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import pick  # noqa: E402
from results import Results, table  # noqa: E402

ROUNDS = pick(full=5, smoke=2)
SIZES = {"base": pick(full=(4096, 512, 32000), smoke=(64, 32, 517)), "large": (8192, 1024, 65536)}


def make_inputs(T, H, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, H, generator=g)
    w = torch.randn(V, H, generator=g) / H ** 0.5
    t = torch.randint(0, V, (T,), generator=g)
    adv = torch.randn(T, generator=g)
    logp = token_logprobs(h, w, t, backend="torch")  # chunked: building inputs must not raise the RSS peak
    old = logp + 0.1 * torch.randn(T, generator=g)
    ref = logp + 0.1 * torch.randn(T, generator=g)
    mask = torch.rand(T, generator=g) > 0.1
    return h, w, t, adv, old, ref, mask


def eager_logp(h, w, t):
    return torch.log_softmax(h @ w.T, dim=-1).gather(1, t[:, None])[:, 0]


def eager_loss(h, w, t, adv, old, ref, mask, kl_coef=0.001):
    logp = eager_logp(h, w, t)
    ratio = torch.exp((logp - old).clamp(-20, 20))  # verl's log-ratio clamp, as gadx.kernels does
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    pg = torch.where(adv < 0, torch.minimum(pg, -adv * 3.0), pg)
    d = (ref - logp).clamp(-20, 20)
    kl = (torch.exp(d) - d - 1).clamp(-10, 10)
    return ((pg + kl_coef * kl) * mask).sum() / mask.sum()


def ours_loss(h, w, t, adv, old, ref, mask, kl_coef=0.001):
    return grpo_loss(h, w, t, adv, old, ref, mask, kl_coef=kl_coef, backend="torch")[0]


PROVIDERS = {"eager": eager_loss, "ours": ours_loss}


def step(provider, inputs):
    h, w, *rest = inputs
    hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = PROVIDERS[provider](hh, ww, *rest)
    loss.backward()
    return loss.detach(), hh.grad, ww.grad


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_child(provider, size, q):
    inputs = make_inputs(*SIZES[size])
    h, w = inputs[0].clone().requires_grad_(), inputs[1].clone().requires_grad_()
    # ru_maxrss survives fork/exec (a spawned child starts at the parent's high-water mark), so
    # reset the kernel's peak-RSS counter instead ("5" > clear_refs, Linux >= 4.0) and read VmHWM.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    PROVIDERS[provider](h, w, *inputs[2:]).backward()
    q.put((_status_kib("VmHWM") - base) / 1024)  # KiB -> MiB


def peak_extra_mib(provider, size):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_child, args=(provider, size, q))
    p.start()
    out = q.get()
    p.join()
    return out


def _params():
    return [pytest.param("base"), pytest.param("large", marks=pytest.mark.slow)]


@pytest.mark.parametrize("size", _params())
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_time(benchmark, provider, size):
    inputs = make_inputs(*SIZES[size])
    benchmark.extra_info.update(dict(zip("THV", SIZES[size])))
    benchmark.pedantic(step, args=(provider, inputs), rounds=3, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def results():
    res = Results("kernels", rounds=ROUNDS, note="fused GRPO loss, CPU torch backend, fwd+bwd; providers one after "
                                                 "the other in each round; peak memory: one spawned process each")
    yield res
    if res.rows:
        res.write()
        print("\n" + table(res.data))


@pytest.mark.timeout(3600)  # 8 full steps + 2 spawned processes; slow on a shared 2-core machine
@pytest.mark.parametrize("size", _params())
def test_ratio(size, results):
    """Correctness, then time and peak-memory ratios ours/eager measured in this run."""
    inputs = make_inputs(*SIZES[size])
    (le, dhe, dwe), (lo, dho, dwo) = step("eager", inputs), step("ours", inputs)
    torch.testing.assert_close(lo, le, rtol=1e-4, atol=1e-6)
    for a, b in ((dho, dhe), (dwo, dwe)):
        assert (a - b).abs().max() <= 1e-3 * b.abs().max()
    times = {p: [] for p in PROVIDERS}
    cpu = {p: [] for p in PROVIDERS}
    for _ in range(ROUNDS):
        for p in PROVIDERS:
            t0, c0 = time.perf_counter(), time.process_time()
            step(p, inputs)
            times[p].append((time.perf_counter() - t0) * 1e3)
            cpu[p].append((time.process_time() - c0) * 1e3)
    med = {p: statistics.median(v) for p, v in times.items()}
    mem = {p: peak_extra_mib(p, size) for p in PROVIDERS}
    T, H, V = SIZES[size]
    results.data["threads"] = torch.get_num_threads()
    print(f"\n[cpu, {torch.get_num_threads()} threads] T={T} H={H} V={V}: "
          f"eager {med['eager']:.0f} ms / {mem['eager']:.0f} MiB peak extra RSS; "
          f"ours {med['ours']:.0f} ms / {mem['ours']:.0f} MiB; "
          f"time ours/eager = {med['ours'] / med['eager']:.2f}x, memory ours/eager = {mem['ours'] / mem['eager']:.3f}x")
    shape = f"T={T} H={H} V={V}"
    results.row(f"torch eager loss fwd+bwd, {shape}", times["eager"], unit="ms", cpu_times=cpu["eager"])
    results.row(f"gadx fused GRPO loss fwd+bwd, {shape}", times["ours"], unit="ms", cpu_times=cpu["ours"],
                baseline=f"torch eager loss fwd+bwd, {shape}")
    results.row(f"torch eager peak extra RSS, {shape}", [mem["eager"]], unit="MiB")
    results.row(f"gadx fused GRPO loss peak extra RSS, {shape}", [mem["ours"]], unit="MiB",
                baseline=f"torch eager peak extra RSS, {shape}")
