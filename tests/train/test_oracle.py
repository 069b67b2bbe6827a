"""The oracle reward is the world's exact teacher log-likelihood; acc* and tie-aware accuracy on hand-built pairs."""
import math
import random

import pytest
import torch

from gadx.train.ceiling import acc_star, pairwise_acc_se, pairwise_acc_ties, spearman
from gadx.train.oracle import Oracle
from gadx.train.sequences import encode_prompt, encode_teacher_reply


@pytest.fixture(scope="module")
def world_oracle(world_tok):
    from gadx.tokenizer import load_tokenizer
    from gadx.world import World

    world = World(seed=0, n_train=60, n_test_id=10, n_test_ood=10)
    tok = load_tokenizer(world_tok)
    prompts = [ex.prompt for ex in world.split("train")[:30]]
    ids = {tuple(encode_prompt(tok, [{"role": "user", "content": p}], 48).ids): p for p in prompts}
    assert len(ids) == len(prompts)
    return world, tok, ids, Oracle(world, tok, ids, [tok.eos_id], floor=-20.0)


def test_oracle_reward_is_the_exact_teacher_loglik(world_oracle):
    world, tok, ids, oracle = world_oracle
    rng = random.Random(3)
    P, R, want = [], [], []
    for pid, text in list(ids.items())[:20]:
        reply = world.teacher.sample(text, rng)
        r = encode_teacher_reply(tok, reply, 256)
        assert r[-1] == tok.eos_id
        P.append(pid), R.append(r), want.append(world.teacher.logprob(text, reply))
    got = oracle.logprobs(P, R)
    assert all(math.isfinite(w) for w in want)
    assert got == pytest.approx(want, abs=1e-12)
    reward = oracle.reward(P, R)
    assert reward.tolist() == pytest.approx([max(w / len(r), -20.0) for w, r in zip(want, R)], abs=1e-6)


def test_oracle_floors_impossible_and_unfinished_replies(world_oracle):
    world, tok, ids, oracle = world_oracle
    pid, text = next(iter(ids.items()))
    reply = world.teacher.sample(text, random.Random(0))
    good = encode_teacher_reply(tok, reply, 256)
    bad = encode_teacher_reply(tok, reply + " Banana.", 256)  # the teacher never adds this
    assert world.teacher.logprob(text, reply + " Banana.") == -math.inf
    unfinished = good[:-1]  # the same text without EOS: cut at the length limit, no teacher reply
    lps = oracle.logprobs([pid] * 3, [good, bad, unfinished])
    assert math.isfinite(lps[0]) and lps[1] == -math.inf and lps[2] == -math.inf
    r = oracle.reward([pid] * 3, [good, bad, unfinished])
    assert r[1] == r[2] == -20.0 and r[0] > -20.0
    with pytest.raises(ValueError, match="does not know the prompt"):
        oracle.logprobs([[1, 2, 3]], [good])


def test_pairwise_accuracy_counts_ties_as_half():
    t_P = torch.tensor([1.0, 0.0])
    s_PN = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    # pairs: 1>0 win, 1=1 tie, 0=0 tie, 0>-1 win
    assert float(pairwise_acc_ties(t_P, s_PN)) == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    same = torch.tensor([[True, False], [False, False]])  # an identical reply is a tie whatever its scores
    assert float(pairwise_acc_ties(t_P, s_PN, same)) == pytest.approx((0.5 + 0.5 + 0.5 + 1) / 4)


def test_acc_star_on_hand_built_pairs():
    inf = math.inf
    logT_t, logS_t = [-1.0, -2.0], [-3.0, -1.0]  # Bayes scores of the teacher replies: 2, -1
    logT_s = [[-1.0, -inf], [-2.0, -0.5]]
    logS_s = [[-1.0, -2.0], [-1.0, -0.5]]  # sample scores: 0, -inf | -1, 0
    # 2>0 win, 2>-inf win, -1=-1 tie, -1<0 loss
    assert float(acc_star(logT_t, logS_t, logT_s, logS_s)) == pytest.approx(2.5 / 4)
    # a student the teacher cannot reproduce at all: the ceiling is 1
    assert float(acc_star([-1.0], [-5.0], [[-inf, -inf]], [[-0.1, -0.2]])) == 1.0
    # the student equal to the teacher, sampling the teacher's own replies: every pair a tie
    same = torch.tensor([[True, True]])
    assert float(acc_star([-0.7], [-0.7], [[-0.7, -0.7]], [[-0.7, -0.7]], same)) == 0.5


def test_accuracy_standard_error_is_clustered_by_prompt():
    t_P = torch.zeros(100)
    # half the prompts always right, half always wrong: 400 pairs but only 100 independent prompts
    s_PN = torch.cat([torch.full((50, 4), -1.0), torch.full((50, 4), 1.0)])
    acc, se = pairwise_acc_se(t_P, s_PN)
    assert acc == 0.5
    assert se == pytest.approx(0.5 * math.sqrt(100 / 99) / 10, rel=1e-6)  # not 0.5/sqrt(400)


def test_spearman():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x * 10) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, torch.tensor([-math.inf, -math.inf, 0.0, 1.0])) > 0.8  # ties and -inf ranked
    assert math.isnan(spearman(x, torch.ones(4)))


def test_gad_diagnostics_on_hand_built_samples(world_oracle):
    from gadx.train.oracle import gad_diagnostics

    world, tok, ids, oracle = world_oracle
    (p0, x0), (p1, x1) = list(ids.items())[:2]
    t0 = encode_teacher_reply(tok, world.teacher.sample(x0, random.Random(1)), 256)
    t1 = encode_teacher_reply(tok, world.teacher.sample(x1, random.Random(2)), 256)
    bad = encode_teacher_reply(tok, "Banana banana.", 256)
    # prompt 0: a copy of the teacher reply and an impossible reply; prompt 1: two impossible replies
    samples = [t0, bad, bad, bad]
    logS = torch.tensor([-3.0, -1.0, -2.0, -2.5])
    reward = oracle.reward([p0, p0, p1, p1], samples).view(2, 2)
    d_t, d_s = torch.tensor([1.0, 0.0]), torch.tensor([[0.5, 2.0], [-1.0, -2.0]])
    m = gad_diagnostics(oracle, [p0, p1], [t0, t1], [p0, p0, p1, p1], samples, logS, torch.tensor([-3.0, -4.0]),
                        d_t, d_s, reward)
    assert m["oracle/valid"] == 0.25
    assert m["reward/no_spread"] == 0.5  # prompt 1's two samples are both at the floor
    assert m["d_acc/train_ties"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)  # the copy is a tie whatever D says
    assert m["d_acc/ceiling"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert m["oracle/logT_per_token"] == pytest.approx(float(reward.mean()))
