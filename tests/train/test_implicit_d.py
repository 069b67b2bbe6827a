"""The implicit-reward discriminator (tools/implicit_d.py) and the step's outside-D hook.

D(x, y) = beta * [log P_theta(y|x) - log S_0(y|x)]: zero at the start, and a Bradley-Terry update
on (teacher reply, student sample) pairs must rank the teacher's reply above the sample. The hook
(StepContext.d_scores) must replace the trainer D's scores in the GAD reward.
"""
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))


def _tiny(seed=0, V=11, H=8):
    """A 1-layer Qwen2-shaped model as HF-named tensors (random weights)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    mc = SimpleNamespace(hidden_size=H, num_heads=2, num_kv_heads=1, head_dim=None, rope_theta=10000.0,
                         rms_norm_eps=1e-6, num_layers=1)
    pre = "model.layers.0."
    sd = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": torch.ones(H), "lm_head.weight": r(V, H),
          pre + "input_layernorm.weight": torch.ones(H), pre + "post_attention_layernorm.weight": torch.ones(H),
          pre + "self_attn.q_proj.weight": r(H, H), pre + "self_attn.k_proj.weight": r(H // 2, H),
          pre + "self_attn.v_proj.weight": r(H // 2, H), pre + "self_attn.o_proj.weight": r(H, H),
          pre + "mlp.gate_proj.weight": r(16, H), pre + "mlp.up_proj.weight": r(16, H), pre + "mlp.down_proj.weight": r(H, 16)}
    return mc, sd


def test_reply_logprob_sums_only_the_reply_tokens_and_ignores_padding():
    from d_curve import hidden, seq_reply_logprob

    mc, sd = _tiny()
    p, r = [1, 2, 3], [4, 5, 6, 7]
    ids = torch.tensor([p + r])
    lp = torch.log_softmax(torch.nn.functional.linear(hidden(mc, sd, ids), sd["lm_head.weight"]) / 0.8, -1)[0]
    want = sum(float(lp[len(p) - 1 + i, tok]) for i, tok in enumerate(r))
    alone = seq_reply_logprob(mc, sd, [p], [r], 0.8)
    padded = seq_reply_logprob(mc, sd, [p, [1, 2, 3, 4, 5, 6]], [r, [9, 9, 9, 9, 9]], 0.8)  # the longer row pads the first
    assert float(alone[0]) == pytest.approx(want, abs=1e-5)
    assert float(padded[0]) == pytest.approx(want, abs=1e-5)


def test_implicit_d_starts_at_zero_and_learns_to_rank_the_teacher_reply_first():
    from implicit_d import ImplicitD

    mc, sd = _tiny()
    d = ImplicitD(mc, sd, lr=3e-2, temperature=0.8, batch=4)
    prompts = [[1, 2], [1, 3], [2, 3], [3, 1]]
    teacher = [[4, 5, 6, 10], [4, 6, 5, 10], [5, 4, 6, 10], [6, 5, 4, 10]]
    student = [[4, 4, 4, 10], [7, 8, 10], [4, 5, 5, 5, 10], [9, 10]]
    assert torch.equal(d.scores(prompts, teacher), torch.zeros(4))
    pairs = list(zip(prompts, teacher, student))
    for _ in range(15):
        d.update(pairs)
    assert (d.scores(prompts, teacher) > d.scores(prompts, student)).all()
    # the frozen reference did not move
    assert torch.equal(d.ref["lm_head.weight"], sd["lm_head.weight"])


@pytest.mark.slow  # a tiny training run: ~1 min on 2 busy cores
def test_step_hook_replaces_the_discriminator_reward(tmp_path, tiny_args):
    from runs import rows, train_with_d_scores

    calls = []

    def d_scores(batch, prompts, responses):
        P, n = len(batch.prompts), len(responses) // len(batch.prompts)
        calls.append((P, n))
        s_PN = torch.tensor([float(len(r)) for r in responses]).view(P, n)  # longer replies score higher
        return torch.zeros(P), s_PN

    cfg = train_with_d_scores(tmp_path, tiny_args, d_scores, "stages.gad.freeze_discriminator=true")
    gad = [r for r in rows(tmp_path / "gad" / "metrics.jsonl") if r["stage"] == "gad"]
    assert len(calls) == len(gad) == cfg.stages.gad.steps
    for r in gad:  # the reward is the hook's score: the mean sample length
        assert r["reward/mean"] == pytest.approx(r["len/student"], abs=1e-4)


def test_logp_reward_is_the_learned_models_loglik_per_token():
    from d_curve import seq_reply_logprob
    from implicit_d import ImplicitD

    mc, sd = _tiny(1)
    d = ImplicitD(mc, sd, lr=1e-2, temperature=0.8, reward="logp", online=False)
    batch = SimpleNamespace(prompts=[[1, 2], [3, 1]], teacher=[[4, 5, 10], [6, 10]])
    prompts = [[1, 2], [1, 2], [3, 1], [3, 1]]
    responses = [[4, 4, 10], [7, 10], [5, 5, 5, 10], [9, 10]]
    t_P, s_PN = d(batch, prompts, responses)
    want = seq_reply_logprob(mc, sd, prompts, responses, 0.8) / torch.tensor([3.0, 2.0, 4.0, 2.0])
    assert torch.allclose(s_PN.flatten(), want, atol=1e-5)
    assert t_P.shape == (2,) and d.log == []  # online=False: no update, nothing logged
    with pytest.raises(ValueError, match="must be ratio"):
        ImplicitD(mc, sd, lr=1e-2, temperature=0.8, reward="oracle")


def test_ratio_current_uses_the_current_student_as_reference():
    from d_curve import seq_reply_logprob
    from implicit_d import ImplicitD

    mc, sd = _tiny(2)
    _, other = _tiny(3)
    d = ImplicitD(mc, sd, lr=1e-2, temperature=0.8, reward="ratio_current", online=False)
    prompts, replies = [[1, 2], [3, 1]], [[4, 5, 10], [6, 10]]
    assert torch.equal(d.scores(prompts, replies), torch.zeros(2))  # no current student yet: S_0
    d.set_current(other)
    want = seq_reply_logprob(mc, sd, prompts, replies, 0.8) - seq_reply_logprob(mc, other, prompts, replies, 0.8)
    assert torch.allclose(d.scores(prompts, replies), want, atol=1e-5)


def test_sft_only_warm_is_the_nll_of_the_teacher_reply_and_bt_weight_scales_the_bt_loss():
    from d_curve import seq_reply_logprob
    from implicit_d import ImplicitD

    mc, sd = _tiny()
    prompts, teacher, student = [[1, 2], [2, 3]], [[4, 5, 10], [6, 10]], [[7, 10], [4, 4, 4, 10]]
    pairs = list(zip(prompts, teacher, student))
    sft = ImplicitD(mc, sd, lr=1e-9, temperature=0.8, batch=2, bt_weight=0.0, sft_weight=1.0)
    want = -(seq_reply_logprob(mc, sd, prompts, teacher, 0.8) / torch.tensor([3.0, 2.0])).mean()
    assert sft.update(pairs) == pytest.approx(float(want), rel=1e-5)
    both = ImplicitD(mc, sd, lr=1e-9, temperature=0.8, batch=2, bt_weight=2.0)
    assert both.update(pairs) == pytest.approx(2 * math.log(2), rel=1e-5)  # D = 0 at the start: BT loss log 2
    with pytest.raises(ValueError, match="not both 0"):
        ImplicitD(mc, sd, lr=1e-3, temperature=0.8, bt_weight=0.0, sft_weight=0.0)


def test_token_reverse_kl_matches_a_float64_reference_and_pulls_the_student_toward_q():
    from gad_token import reply_mask, token_reverse_kl

    mc, s_sd = _tiny(seed=0)
    _, q_sd = _tiny(seed=1)
    P, R = [[1, 2, 3], [2]], [[4, 5], [6, 7, 8]]
    from d_curve import _pad, hidden

    ids, _ = _pad([p + r for p, r in zip(P, R)], 0)
    mask = reply_mask(P, R, ids.shape[1])
    assert mask.sum() == 5 and mask[0, 2] and not mask[0, 4] and mask[1, 0] and mask[1, 2]
    got = token_reverse_kl(mc, s_sd, q_sd, ids, mask, 0.8)
    d64 = lambda sd: {k: v.double() for k, v in sd.items()}  # noqa: E731
    lsr = torch.log_softmax(torch.nn.functional.linear(hidden(mc, d64(s_sd), ids), s_sd["lm_head.weight"].double()) / 0.8, -1)
    lqr = torch.log_softmax(torch.nn.functional.linear(hidden(mc, d64(q_sd), ids), q_sd["lm_head.weight"].double()) / 0.8, -1)
    want = float((lsr.exp() * (lsr - lqr)).sum(-1)[mask].mean())
    assert float(got) == pytest.approx(want, rel=1e-4)
    # descending it moves S toward Q (a flipped sign would push it away)
    s = {k: v.clone().requires_grad_(True) for k, v in s_sd.items()}
    opt = torch.optim.SGD(list(s.values()), lr=0.5)
    for _ in range(20):
        loss = token_reverse_kl(mc, s, q_sd, ids, mask, 0.8)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(token_reverse_kl(mc, s, q_sd, ids, mask, 0.8)) < 0.5 * float(got)
