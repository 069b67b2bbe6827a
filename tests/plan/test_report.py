"""The plan's table (gadx.plan.report): D's head apart from its trunk, the per-phase rows."""
from gadx.plan.dryrun import RankPlan, _split
from gadx.plan.report import GiB, rows, table


def test_d_head_rows_split_d_without_changing_the_total():
    c = {"weights: student": 10 * GiB, "weights: discriminator": 10 * GiB, "optimizer: student": 3 * GiB,
         "optimizer: discriminator": 3 * GiB, "optimizer: Adam moments": 8 * GiB}
    head = {"weights": 1 * GiB, "grads": 2 * GiB, "main": GiB // 2, "moments": 1 * GiB}
    split = _split(c, grads_G=GiB, grads_D=2 * GiB, head_D=head)
    assert split["weights: discriminator"] == 9 * GiB and split["weights: discriminator head"] == 1 * GiB
    assert split["grads: discriminator"] == 0 and split["grads: discriminator head"] == 2 * GiB
    assert split["optimizer: discriminator head"] == GiB // 2 + GiB
    plain = _split(c, grads_G=GiB, grads_D=2 * GiB)
    phases = {"rollout": {"start": 30 * GiB, "peak": 31 * GiB, "activations": 0, "loss_buffers": 0},
              "student_logliks": {"start": 30 * GiB, "peak": 32 * GiB, "activations": GiB, "loss_buffers": GiB // 4}}
    a, b = (RankPlan(rank=0, tp_rank=0, pp_rank=0, dp_rank=0, device="x", peak=32 * GiB, components=x, phases=phases)
            for x in (split, plain))
    assert sum(v for _, v in rows(a)) == sum(v for _, v in rows(b))  # the same memory, split differently
    labels = dict(rows(a))
    assert labels["D head: weights"] == GiB and labels["D head: grads (DDP fp32 buffer)"] == 2 * GiB
    text, fits = table([a], 80 * GiB)
    assert fits
    line = next(x for x in text.splitlines() if x.startswith("student_logliks"))
    assert line.split()[1:4] == ["32.00", "1.00", "0.25"] and "implicit D's reference" in line
