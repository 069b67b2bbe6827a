"""The fake-tensor dry run of one GAD step (gadx.plan): device placement, memory, layouts."""
import pytest
import torch

EXPECTED_READS = ("train/player.py", "megatron/core/optimizer/clip_grads.py", "plan/dryrun.py:")


def _reads_ok(plan):
    """Host reads in the step: only Player.step's finite check, megatron's grad norm and the
    plan's own bridges (plan/dryrun.py);
    no per-sequence syncs in packing or losses."""
    bad = [r for r in plan.host_reads if not any(e in r for e in EXPECTED_READS)]
    assert not bad, bad


def test_gad_step_tp2_pp2_both_stages_on_fake_gpu(clean_dist, tiny):
    """The default-run check: a TP=2 x PP=2 layout (world 4) posed as rank 0 (first stage) and
    rank 2 (last stage), every forward, backward and optimizer step on fake-GPU tensors."""
    from gadx.plan import plan_rank

    cfg, mc = tiny(tp=2, pp=2)
    plans = [plan_rank(cfg, mc, world=4, rank=r) for r in (0, 2)]
    assert [(p.pp_rank, p.tp_rank) for p in plans] == [(0, 0), (1, 0)]
    for p in plans:
        assert p.device == "fakecuda:0"
        # (no old_logprobs phase: one policy update per rollout skips that forward)
        assert set(p.phases) == {"rollout", "ref_logprobs", "d_score", "advantages", "d_update", "g_update"}
        assert p.peak >= max(ph["peak"] for ph in p.phases.values()) > 0
        assert p.components["weights: student"] > 0 and p.components["grads: student"] > 0
        assert p.components["KV cache"] > 0 and p.components["gathered sampler copy"] > 0  # PP: the other stage's weights gathered
        _reads_ok(p)
    # the last stage holds the loss: activations at the loss entry are seen there only
    assert plans[1].phases["g_update"]["loss_buffers"] > 0 == plans[0].phases["g_update"]["loss_buffers"]


def test_planted_cpu_micro_batches_are_caught(clean_dist, monkeypatch, tiny):
    """The bug of issue 15: micro-batches packed on the CPU for a GPU model. The dry run must fail
    on it (on a CPU-only machine the normal trainer cannot see it: everything is on the CPU)."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    from gadx.plan import plan_rank
    from gadx.train import step
    from gadx.train.packing import pack

    def cpu_pack(self, prompts, responses, **kw):  # the pre-fix StepContext.pack: no device
        return pack(prompts, responses, self.budget, pad_to=self.budget if self.dims.pp > 1 else 0, **kw)

    monkeypatch.setattr(step.StepContext, "pack", cpu_pack)
    cfg, mc = tiny()
    with pytest.raises((FakeTensorDeviceMismatchError, RuntimeError), match="device"):
        plan_rank(cfg, mc, world=1, rank=0)


def test_planted_cpu_tensor_in_a_loss_is_caught(clean_dist, monkeypatch, tiny):
    """A tensor made on the CPU inside a loss (here GRPO's advantages) meets the model's device."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    from gadx.plan import plan_rank
    from gadx.train import heads

    real = heads.grpo_loss

    def planted(model, hidden_TH, targets_T, adv_T, *a, **kw):
        return real(model, hidden_TH, targets_T, torch.zeros(adv_T.shape), *a, **kw)

    monkeypatch.setattr(heads, "grpo_loss", planted)
    cfg, mc = tiny()
    with pytest.raises((FakeTensorDeviceMismatchError, ValueError, RuntimeError), match="device|cpu"):
        plan_rank(cfg, mc, world=1, rank=0)


# Stated tolerance of the estimate against real CPU tensors of the same step (see docs/dry_run.md).
TOLERANCE = 0.02


def test_estimate_matches_real_cpu_peak(clean_dist, tiny):
    """The fake-GPU estimate of a tiny model's GAD step vs the peak of the same step on real CPU
    tensors (MemTracker counting real storages): within TOLERANCE, component by component too."""
    from gadx.plan import plan_rank

    cfg, mc = tiny()
    est = plan_rank(cfg, mc, world=1, rank=0, fake=True)
    real = plan_rank(cfg, mc, world=1, rank=0, fake=False)
    assert real.device == "cpu"
    assert abs(est.peak - real.peak) <= TOLERANCE * real.peak, (est.peak, real.peak, est.phases, real.phases)
    for k in ("weights: student", "grads: student", "KV cache"):
        assert est.components[k] == real.components[k], k
    # Adam's step counters live on the host: counted with the device only in the real CPU run
    assert 0 <= real.components["optimizer: Adam moments"] - est.components["optimizer: Adam moments"] < 1024


@pytest.mark.slow
def test_microbatch_cap_keeps_the_peak(clean_dist, tiny):
    """`gadx plan --microbatches K` (what makes a 7B step take minutes): at worst-case lengths
    every micro-batch of a pass is equally full, so running the first K gives the same peak."""
    from gadx.plan import plan_rank

    cfg, mc = tiny(**{"stages.prompts_per_step": 8, "parallel.micro_batch_tokens": 72})  # 3 sequences per micro-batch
    full = plan_rank(cfg, mc, world=1, rank=0)
    capped = plan_rank(cfg, mc, world=1, rank=0, max_microbatches=2)
    # equal up to the few bytes of 0-d loss outputs the skipped micro-batches would have kept
    assert abs(full.peak - capped.peak) <= 1e-3 * full.peak, (full.peak, capped.peak)
    for k, v in full.phases.items():
        assert abs(v["peak"] - capped.phases[k]["peak"]) <= 1e-3 * v["peak"], k
