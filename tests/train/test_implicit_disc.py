"""The trainer's implicit-reward discriminator (discriminator.kind="implicit").

D(x, y) = beta * [log P_theta(y|x) - log S(y|x)], both sums over the reply's tokens at the sampling
temperature, P_theta the D player's own LM and S the reference handed in per sequence (the current
student). Checked here at TP=1 in one process: the scores against a float64 plain-PyTorch reference,
D == 0 right after it is copied from the student, one Bradley-Terry step widens the teacher-minus-sample
margin and moves only D, and a tiny pipeline with the implicit D runs warmup, the gate and GAD.
The same D at TP=2 / PP=2: tests/distributed/test_implicit_layouts.py.
"""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

V = 97


@pytest.fixture(scope="module")
def models():
    """(student S, implicit D's LM, another LM): tiny Qwen2-shaped models with different weights."""
    from gadx.models import ModelConfig, build_model
    from gadx.parallel import init_parallel

    init_parallel()
    cfg = ModelConfig(family="qwen2", vocab_size=V, hidden_size=32, intermediate_size=48, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
    return cfg, build_model(cfg, seed=1), build_model(cfg, seed=2)


def _pairs(P=3, n=2, seed=5):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda k: torch.randint(3, V, (k,), generator=g).tolist()  # noqa: E731
    prompts = [rnd(int(k)) for k in torch.randint(2, 6, (P,), generator=g)]
    teacher = [rnd(int(k)) for k in torch.randint(2, 7, (P,), generator=g)]
    samples = [rnd(int(k)) for k in torch.randint(1, 7, (P * n,), generator=g)]
    return prompts, teacher, samples


def _ctx(n):
    """What step._d_pack needs of a StepContext."""
    from gadx.parallel.state import current_parallel
    from gadx.train.packing import pack

    dims = current_parallel()
    return SimpleNamespace(dims=dims, stages=SimpleNamespace(n_samples=n),
                           pack=lambda p, r, **kw: pack(p, r, 512, device=dims.device, **kw))


def _d_mbs(prompts, teacher, samples, n):
    from gadx.train.step import Batch, _d_pack

    batch = Batch(prompts, teacher, [True] * len(prompts), global_prompts=len(prompts))
    return _d_pack(_ctx(n), batch, samples, n)


def _players(models, *, beta, temperature, lr=0.0, copy=False):
    from gadx.train.player import ImplicitReward, Player
    from gadx.train.trainer import start_d

    _, s_model, d_model = models
    if copy:
        start_d(s_model, d_model, "implicit")
    G = Player(s_model, trainable=False)
    D = Player(d_model, lr=lr, implicit=ImplicitReward(beta=beta, temperature=temperature))
    return G, D


def _ref64(cfg, model, prompts, replies, temperature):
    """float64 plain PyTorch: per sequence, the sum over the reply's tokens of log P(token | prefix) at T."""
    from d_curve import hidden

    from gadx.models import hf_state_dict

    sd = {k: v.detach().double() for k, v in hf_state_dict(model).items()}
    sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
    mc = SimpleNamespace(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                         head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
                         num_layers=cfg.num_layers)
    out = []
    for p, r in zip(prompts, replies):
        ids = torch.tensor([p + r])
        lp = torch.log_softmax(F.linear(hidden(mc, sd, ids), sd["lm_head.weight"]) / temperature, -1)[0]
        out.append(sum(lp[len(p) - 1 + i, t] for i, t in enumerate(r)))
    return torch.stack(out)


def _seq_order(prompts, teacher, samples, n):
    """The (prompt, reply) list in _d_pack's order: each prompt's teacher reply, then its n samples."""
    P = len(prompts)
    return ([p for p in prompts for _ in range(n + 1)],
            [x for i in range(P) for x in (teacher[i], *samples[i * n:(i + 1) * n])])


def test_implicit_scores_equal_a_float64_reference(models):
    from gadx.train.step import with_ref

    cfg, s_model, d_model = models
    T, beta, n = 0.7, 1.5, 2
    G, D = _players(models, beta=beta, temperature=T)
    prompts, teacher, samples = _pairs(n=n)
    mbs = _d_mbs(prompts, teacher, samples, n)
    N = len(prompts) * (n + 1)
    with_ref(mbs, G.seq_logprobs(mbs, N, temperature=T))
    got = D.scores(mbs, N).double()
    sp, sr = _seq_order(prompts, teacher, samples, n)
    want = beta * (_ref64(cfg, d_model, sp, sr, T) - _ref64(cfg, s_model, sp, sr, T))
    assert want.abs().max() > 0.1  # the two models differ: a real comparison
    assert torch.allclose(got, want, atol=2e-4, rtol=1e-4), (got, want)
    # the temperature matters: at T=1 the reference differs from what D scored at T=0.7
    want_t1 = beta * (_ref64(cfg, d_model, sp, sr, 1.0) - _ref64(cfg, s_model, sp, sr, 1.0))
    assert not torch.allclose(got, want_t1, atol=1e-3)


def test_implicit_d_is_zero_right_after_it_is_copied(models):
    from gadx.models import build_model
    from gadx.train.step import with_ref

    cfg = models[0]
    fresh = (cfg, build_model(cfg, seed=7), build_model(cfg, seed=8))  # D's own init differs from S's
    T, n = 0.8, 2
    G, D = _players(fresh, beta=1.0, temperature=T, lr=1e-3, copy=True)
    prompts, teacher, samples = _pairs(n=n, seed=6)
    mbs = _d_mbs(prompts, teacher, samples, n)
    N = len(prompts) * (n + 1)
    with_ref(mbs, G.seq_logprobs(mbs, N, temperature=T))
    assert torch.equal(D.scores(mbs, N), torch.zeros(N))


def test_one_bt_step_widens_the_margin_and_moves_only_d(models):
    from gadx.models import build_model
    from gadx.train.step import with_ref

    cfg = models[0]
    fresh = (cfg, build_model(cfg, seed=11), build_model(cfg, seed=12))
    T, n = 0.8, 2
    G, D = _players(fresh, beta=1.0, temperature=T, lr=3e-3, copy=True)
    prompts, teacher, samples = _pairs(P=4, n=n, seed=9)
    P, N = len(prompts), len(prompts) * (n + 1)
    mbs = _d_mbs(prompts, teacher, samples, n)
    with_ref(mbs, G.seq_logprobs(mbs, N, temperature=T))

    def margin():
        s = D.scores(mbs, N).view(P, n + 1)
        return float((s[:, :1] - s[:, 1:]).mean())

    g_before = {k: v.clone() for k, v in G.model.state_dict().items() if isinstance(v, torch.Tensor)}
    d_before = {k: v.clone() for k, v in D.model.state_dict().items() if isinstance(v, torch.Tensor)}
    assert margin() == 0.0
    u = D.train_bt(mbs, pairs=P * n)
    assert not u.skipped and u.grad_norm > 0
    assert u.loss == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)  # D = 0: every pair at log 2
    assert margin() > 0.0
    assert all(torch.equal(v, G.model.state_dict()[k]) for k, v in g_before.items())
    d_after = D.model.state_dict()
    assert any(not torch.equal(v, d_after[k]) for k, v in d_before.items())


@pytest.mark.slow  # a tiny pipeline (warmup, gate, GAD): ~1 min on 2 busy cores
def test_gad_runs_end_to_end_with_the_implicit_d(tmp_path, tiny_args):
    from gadx.train.config import load_config
    from gadx.train.env import Env
    from gadx.train.trainer import Run
    from runs import rows

    cfg, _ = load_config(tiny_args(tmp_path, "run.plan=gad", "discriminator.kind=implicit", "stages.gad.gate=fixed"))
    env = Env(cfg)
    try:
        run = Run(cfg, env, name="gad", out_dir=tmp_path / "gad")
        assert run.stages.stages[-1].name == "gad"
        summary = run.train()
    finally:
        env.close()
    assert run.D.implicit is not None and run.D.opt.param_groups[0]["lr"] == pytest.approx(5e-5)
    assert not summary["gad_skipped"]
    got = rows(tmp_path / "gad" / "metrics.jsonl")
    d_rows = [r for r in got if "loss/d" in r]
    # D's first update starts from the copy of G: every pair ties, the loss is log 2
    assert d_rows[0]["loss/d"] == pytest.approx(0.6931, abs=1e-3)
    gad = [r for r in got if r["stage"] == "gad"]
    assert len(gad) == cfg.stages.gad.steps
    for r in gad:
        assert all(torch.isfinite(torch.tensor(float(r[k]))) for k in ("loss/d", "loss/g_pg", "reward/mean", "grad_norm/d"))


def test_d_lr_defaults_by_kind_and_config_errors():
    from gadx.train.config import d_lrs, load_config

    def cfg(*sets):
        argv = [x for s in sets for x in ("--set", s)]
        return load_config(argv)[0]

    assert d_lrs(cfg()) == (1e-3, 1e-3)  # the score head: today's lrs
    assert d_lrs(cfg("discriminator.kind=implicit")) == (5e-5, 5e-5)
    assert d_lrs(cfg("discriminator.kind=implicit", "stages.gad.d_lr=1e-5")) == (5e-5, 1e-5)
    for bad, msg in (("discriminator.kind=lm", "discriminator.kind"), ("discriminator.beta=0", "discriminator.beta"),
                     ("stages.warmup.d_lr=-0.5", "stages.warmup.d_lr")):
        with pytest.raises(ValueError, match=msg):
            cfg(bad)


def test_seqkd_arm_lr_default_and_fallback_to_warmups_end():
    from gadx.train.config import load_config, sft_lr
    from gadx.train.run import arm_config

    cfg, _ = load_config([])
    assert arm_config(cfg, "seqkd").stages.seqkd.lr == pytest.approx(1e-4)
    cfg2, _ = load_config(["--set", "stages.seqkd.arm_lr=-1"])
    s = cfg2.stages
    assert arm_config(cfg2, "seqkd").stages.seqkd.lr == pytest.approx(sft_lr(s, s.warmup.lr, s.warmup.steps - 1, s.warmup.steps))
    with pytest.raises(ValueError, match="arm_lr"):
        load_config(["--set", "stages.seqkd.arm_lr=0"])
