"""`gadx plan` with the implicit-reward discriminator (discriminator.kind=implicit): the D the
trainer builds (a whole LM with ImplicitReward), placed on the fake GPU, and what it costs in memory
against the score-head D."""
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from test_dry_run import _reads_ok

# an untied LM head, so the implicit D holds one of its own ([V, H]); tied on one stage it shares the embedding
UNTIED = {"tie_embeddings": False}


def _plan(tiny, kind, fake=True, **extra):
    from gadx.plan import plan_rank

    cfg, mc = tiny(**{"discriminator.kind": kind, **extra})
    mc = dataclasses.replace(mc, **UNTIED)
    return cfg, mc, plan_rank(cfg, mc, world=1, rank=0, fake=fake)


def _head_bytes(mc, cfg) -> int:
    """What the implicit D's own LM head holds beyond the score D's [1, H] head, from the config:
    [V, H] weights at the model dtype, DDP's fp32 grads, fp32 main params (16-bit weights only) and
    two fp32 Adam moments (one rank: DP = 1). Tied to the embedding (one stage), the LM head is the
    embedding both kinds hold: nothing extra."""
    V, H = mc.vocab_size, mc.hidden_size
    w = torch.empty((), dtype=getattr(torch, cfg.model.dtype)).element_size()
    per_param = w + 4 + (4 if w < 4 else 0) + 8
    return (0 if mc.tie_embeddings else V * H * per_param) - (H + 1) * per_param  # minus the score head (weight + bias)


def _bt_logits_bytes(mc, cfg) -> int:
    """One [chunk, V] fp32 logits buffer of the implicit D's Bradley-Terry step (heads.seq_logprob_sums):
    D's pairs are packed a group at a time (a prompt's teacher reply and its n samples, worst-case
    lengths), as many whole groups as the micro-batch budget holds; the head runs in chunks of at most
    seq_logprob_sums' default chunk."""
    from gadx.train import heads

    st = cfg.stages
    group = (st.n_samples + 1) * (st.max_prompt_len + st.max_response_len)
    tokens = (cfg.parallel.micro_batch_tokens // group) * group
    assert tokens > 0, "the tiny config must fit one D group per micro-batch"
    chunk = inspect.signature(heads.seq_logprob_sums).parameters["chunk"].default
    return min(chunk, tokens) * mc.vocab_size * 4


def test_implicit_d_plan_of_the_tiny_recipe_on_fake_gpu(clean_dist):
    """recipes/tiny.toml with discriminator.kind=implicit: the GAD step runs whole on the fake GPU (no
    device mismatch, no host read beyond the score D's), with the reference forward as its own phase,
    and its peak exceeds the score-head plan's by at least D's LM head (tied here: none beyond the
    shared embedding) plus one [chunk, V] fp32 logits buffer of D's Bradley-Terry step."""
    from gadx.plan import plan_rank
    from gadx.plan.cli import model_config
    from gadx.train.config import load_config

    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "tiny.toml")
    plans = {}
    for kind in ("score", "implicit"):
        cfg, _ = load_config(["--config", recipe, "--set", f"discriminator.kind={kind}"])
        mc = model_config(cfg)
        plans[kind] = plan_rank(cfg, mc, world=1, rank=0)
    imp, score = plans["implicit"], plans["score"]
    assert imp.device == "fakecuda:0"
    _reads_ok(imp)
    assert imp.host_reads == score.host_reads
    assert set(imp.phases) == set(score.phases) | {"student_logliks"}
    bound = _head_bytes(mc, cfg) + _bt_logits_bytes(mc, cfg)
    assert imp.peak - score.peak >= bound, (imp.peak, score.peak, bound)
    assert imp.phases["d_update"]["peak"] - score.phases["d_update"]["peak"] >= bound


def test_implicit_d_plan_on_fake_gpu_costs_its_lm_head_and_vocab_buffers(clean_dist, tiny):
    """The implicit-D GAD step runs whole on the fake GPU (no device mismatch, no new host reads),
    with its own phase for the reference forward, and costs at least D's LM head (every phase) plus
    one [chunk, V] fp32 logits buffer (D's Bradley-Terry step) more than the score-head D."""
    cfg, mc, imp = _plan(tiny, "implicit")
    _, _, score = _plan(tiny, "score")
    assert imp.device == "fakecuda:0"
    _reads_ok(imp)
    assert imp.host_reads == score.host_reads  # the implicit path adds no host read
    # the extra no-grad student forward over D's pairs (the implicit D's reference S_t): its own phase
    assert set(imp.phases) == set(score.phases) | {"student_logliks"}
    assert imp.phases["student_logliks"]["loss_buffers"] > 0
    head = _head_bytes(mc, cfg)
    # the head is its own component: exactly the [V, H] weights and DDP's fp32 gradient buffer
    V, H = mc.vocab_size, mc.hidden_size
    w = torch.empty((), dtype=getattr(torch, cfg.model.dtype)).element_size()
    assert imp.components["weights: discriminator head"] == V * H * w
    assert imp.components["grads: discriminator head"] == V * H * 4
    assert score.components["weights: discriminator head"] == (H + 1) * w
    # the trunk is the same D either way
    assert imp.components["weights: discriminator"] == score.components["weights: discriminator"]
    # whole step: at least the head (the GRPO update, the peak of both, holds D's state too)
    assert imp.peak - score.peak >= head, (imp.peak, score.peak, head)
    # D's update: the head plus at least one vocab-sized logits buffer of its BT loss
    bufs = _bt_logits_bytes(mc, cfg)
    d_imp, d_score = imp.phases["d_update"], score.phases["d_update"]
    assert d_imp["peak"] - d_score["peak"] >= head + bufs, (d_imp, d_score, head, bufs)
    assert d_imp["loss_buffers"] >= bufs > d_score["loss_buffers"]


def test_planted_cpu_reference_in_the_implicit_d_is_caught(clean_dist, monkeypatch, tiny):
    """A reference log-likelihood left on the CPU in the implicit path (what with_ref guards against)
    meets D's log-likelihoods on the GPU inside its score / BT loss: the plan must fail on it."""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    from gadx.train import step

    def cpu_ref(mbs, ref_N):
        for mb in mbs:
            mb.per_seq["ref"] = ref_N.index_select(0, mb.seq_N.to(ref_N.device)).to("cpu")
        return mbs

    monkeypatch.setattr(step, "with_ref", cpu_ref)
    with pytest.raises((FakeTensorDeviceMismatchError, RuntimeError), match="device"):
        _plan(tiny, "implicit")


@pytest.mark.slow
def test_implicit_d_estimate_matches_real_cpu_peak(clean_dist, tiny):
    """The implicit-D plan on the fake GPU vs the same step on real CPU tensors (as
    test_dry_run.test_estimate_matches_real_cpu_peak for the score D), phase by phase."""
    from test_dry_run import TOLERANCE

    _, _, est = _plan(tiny, "implicit", fake=True)
    _, _, real = _plan(tiny, "implicit", fake=False)
    assert abs(est.peak - real.peak) <= TOLERANCE * real.peak, (est.peak, real.peak)
    for k, v in real.phases.items():
        assert abs(est.phases[k]["peak"] - v["peak"]) <= TOLERANCE * v["peak"], k
    for k in ("weights: discriminator head", "grads: discriminator head", "weights: discriminator"):
        assert est.components[k] == real.components[k], k


def test_implicit_d_tp2_pp2_both_stages_on_fake_gpu(clean_dist, tiny):
    """The implicit D at TP=2 x PP=2 (vocab-parallel log-probs on the last stage, the reference riding
    the pipeline on the micro-batches), both stages on the fake GPU; the LM head lives on the last stage."""
    from gadx.plan import plan_rank

    cfg, mc = tiny(tp=2, pp=2, **{"discriminator.kind": "implicit"})
    mc = dataclasses.replace(mc, **UNTIED)
    plans = [plan_rank(cfg, mc, world=4, rank=r) for r in (0, 2)]
    for p in plans:
        assert p.device == "fakecuda:0" and "student_logliks" in p.phases
        _reads_ok(p)
    # this TP rank's [V/2, H] head on the last stage only
    assert plans[0].components["weights: discriminator head"] == 0
    w = torch.empty((), dtype=getattr(torch, cfg.model.dtype)).element_size()
    assert plans[1].components["weights: discriminator head"] == mc.vocab_size // 2 * mc.hidden_size * w


def test_disc_kind_is_one_rule_for_trainer_and_plan():
    """gadx.train.disc_kind: the head and reward of D by kind (the trainer and the plan both call it)."""
    from gadx.train.config import load_config
    from gadx.train.disc_kind import disc_kind
    from gadx.train.player import ImplicitReward

    cfg, _ = load_config(["--set", "discriminator.kind=implicit", "--set", "discriminator.beta=0.5",
                          "--set", "stages.temperature=0.7"])
    assert disc_kind(cfg) == ("lm", ImplicitReward(beta=0.5, temperature=0.7))
    cfg.discriminator.kind = "score"
    assert disc_kind(cfg) == ("score", None)
    cfg.discriminator.kind = "implicitt"
    with pytest.raises(ValueError, match="implicitt"):
        disc_kind(cfg)


def test_implicit_d_warmup_step_on_fake_gpu(clean_dist, tiny):
    """Warmup's D step with the implicit D (its reference: the current student over D's pairs, then the
    Bradley-Terry update) on the same fake GPU: the other trainer path of the implicit D."""
    from gadx.plan import plan_rank
    from gadx.train.step import warmup_step

    cfg, mc = tiny(**{"discriminator.kind": "implicit"})
    out = {}

    def warmup_d(ctx, batch):
        out.update(warmup_step(ctx, batch, 1, d_only=True))

    p = plan_rank(cfg, mc, world=1, rank=0, after_step=warmup_d)
    assert "loss/d" in out and "loss/g_ce" not in out
    _reads_ok(p)
