import math

import pytest
import torch

from gadx.train.losses import bt_loss, group_advantages, pairwise_acc


def test_bt_loss_matches_definition():
    t = torch.tensor([1.0, -0.5])
    s = torch.tensor([[0.0, 2.0, 1.0], [-1.0, -0.5, 3.0]])
    want = sum(-math.log(1 / (1 + math.exp(-(t[p] - s[p, i]).item()))) for p in range(2) for i in range(3)) / 6
    assert bt_loss(t, s).item() == pytest.approx(want, rel=1e-6)
    assert pairwise_acc(t, s).item() == pytest.approx(2 / 6)  # strict: ties count as wrong


def test_bt_gradient_pushes_teacher_up_student_down():
    t = torch.zeros(1, requires_grad=True)
    s = torch.zeros(1, 2, requires_grad=True)
    bt_loss(t, s).backward()
    assert t.grad.item() < 0 and (s.grad > 0).all()


def test_group_advantages_unbiased_std():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    a = group_advantages(r)
    m, sd = 3.0, torch.tensor([1.0, 2.0, 3.0, 6.0]).std(unbiased=True).item()
    assert torch.allclose(a[0], (r[0] - m) / (sd + 1e-6))
    assert torch.equal(a[1], torch.zeros(4))  # constant reward -> no signal, no NaN
    assert sd == pytest.approx(math.sqrt(14 / 3))
