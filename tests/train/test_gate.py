"""The D gate and the chance warning, relative to acc* and to the noise of the estimate."""
import pytest

from gadx.train.gate import chance_warning, gap_target, gate_decision


def test_target_closes_a_fraction_of_the_gap_to_the_ceiling():
    assert gap_target(0.9, 0.5, fixed=0.65) == pytest.approx(0.7)
    assert gap_target(None, 0.5, fixed=0.65) == 0.65  # no known ceiling (a real teacher)
    with pytest.raises(ValueError, match="fraction"):
        gap_target(0.9, 1.5, fixed=0.65)
    with pytest.raises(ValueError, match="acc_star"):
        gap_target(1.2, 0.5, fixed=0.65)


def test_gate_opens_on_the_lower_bound_not_the_point_estimate():
    # 0.656 on 64 pairs (se ~0.06): the lucky pass of the old fixed gate stays shut
    d = gate_decision(acc=0.656, se=0.06, n_pairs=64, acc_star=0.93, min_pairs=64)
    assert not d.open and d.lower < d.target
    d = gate_decision(acc=0.76, se=0.02, n_pairs=256, acc_star=0.93)
    assert d.open and d.target == pytest.approx(0.715) and d.lower == pytest.approx(0.76 - 1.645 * 0.02)
    assert not gate_decision(acc=0.73, se=0.02, n_pairs=256, acc_star=0.93).open  # bound 0.697 < 0.715


def test_gate_needs_enough_pairs_and_a_gap():
    d = gate_decision(acc=0.99, se=0.001, n_pairs=64, acc_star=0.99)
    assert not d.open and "too noisy" in d.reason
    d = gate_decision(acc=0.5, se=0.01, n_pairs=400, acc_star=0.5)
    assert not d.open and "no gap" in d.reason


def test_gate_follows_the_ceiling_down_as_the_student_improves():
    # a student close to the teacher: acc* 0.6, D at 0.58 +- 0.01 has closed most of that gap
    assert gate_decision(acc=0.58, se=0.01, n_pairs=400, acc_star=0.6).open
    # the old fixed gate would have shut it
    assert not gate_decision(acc=0.58, se=0.01, n_pairs=400, acc_star=None).open


def test_chance_warning():
    assert chance_warning(acc=0.52, se=0.02, n_pairs=400, acc_star=0.93) is not None  # upper 0.553 < 0.586
    assert chance_warning(acc=0.58, se=0.02, n_pairs=400, acc_star=0.93) is None
    assert chance_warning(acc=0.5, se=0.01, n_pairs=400, acc_star=0.5) is None  # nothing left to see
    msg = chance_warning(acc=0.5, se=0.01, n_pairs=400, acc_star=None)
    assert msg is not None and "chance" in msg


def test_trainer_gate_in_ceiling_mode_reports_acc_star(tmp_path, tiny_args, capsys):
    """gate="ceiling": the held-out check uses gate_samples samples per prompt, logs its error and
    acc* (the embedded world's exact teacher), and the gate decision says why."""
    from runs import rows, train

    train(tmp_path, tiny_args, "stages.gad.gate=ceiling", "stages.gad.gate_samples=3", "stages.gad.gate_min_pairs=12",
          "stages.max_response_len=64", "parallel.micro_batch_tokens=512", "data.held_out_size=8")
    err = capsys.readouterr().err
    assert "gadx.train: gate: " in err and "acc*=" in err
    held = [r for r in rows(tmp_path / "gad" / "metrics.jsonl") if "d_acc/heldout" in r]
    assert held and all(r["d_acc/heldout_n_pairs"] == 8 * 3 for r in held)
    assert all(0.5 <= r["d_acc/heldout_acc_star"] <= 1.0 and r["d_acc/heldout_se"] > 0 for r in held)
