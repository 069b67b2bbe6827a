"""Stage transitions, the order of operations inside a GAD step, and the D-health gate."""
from runs import rows, train


def test_gad_step_order_and_stage_transitions(tmp_path, tiny_args):
    rec = []
    train(tmp_path, tiny_args, recorder=rec)
    r = rows(tmp_path / "gad" / "metrics.jsonl")
    assert [x["stage"] for x in r] == ["warmup"] * 3 + ["gad"] * 2
    # warmup: 1 G-only SFT step, 1 D-only step (D copied from G), 1 step of both
    assert rec[:5] == ["g_sft_update", "sample", "d_update", "sample", "d_update"]
    assert rec[5] == "g_sft_update"
    # one policy update per rollout: no old-log-prob forward (the update's own log-probs are "old")
    gad_ops = ["sample", "old_logprobs", "ref_logprobs", "d_score", "advantages", "d_update", "g_update"]
    tail = [op for op in rec if op in gad_ops][-2 * (len(gad_ops) - 1):]
    assert tail == [op for op in gad_ops if op != "old_logprobs"] * 2
    assert all("entropy" in x and "kl" in x for x in r[3:])
    assert "eval/world_test_id/task_accuracy" in r[0]  # gadx.eval.evaluate_small every run.eval_every steps


def test_gate_skips_gad_when_discriminator_stays_at_chance(tmp_path, tiny_args, capsys, monkeypatch):
    from gadx.train.trainer import Run

    monkeypatch.setattr(Run, "heldout_acc", lambda self, ctx, step: 0.5)  # a D stuck at chance
    s = train(tmp_path, tiny_args, "stages.gad.d_acc_gate=0.65", "stages.gad.d_gate_steps=1")
    assert s["gad_skipped"]
    assert [x["stage"] for x in rows(tmp_path / "gad" / "metrics.jsonl")] == ["warmup"] * 3 + ["gate"]
    assert "skipping the GAD stage" in capsys.readouterr().err


def test_warmup_updates_d_every_k_steps_after_it_starts(tmp_path, tiny_args):
    """warmup.d_every: after g_only and d_only steps, G's SFT runs every step and D's update
    (with its rollout) every d_every steps."""
    rec = []
    train(tmp_path, tiny_args, "stages.warmup.steps=8", "stages.warmup.g_only_steps=2", "stages.warmup.d_only_steps=1",
          "stages.warmup.d_every=3", "stages.gad.steps=0", recorder=rec)
    ops = [op for op in rec if op in ("g_sft_update", "d_update")]
    # steps: G, G | D | D+G, G, G, D+G, G
    assert ops == ["g_sft_update"] * 2 + ["d_update"] + ["d_update", "g_sft_update"] + ["g_sft_update"] * 2 \
        + ["d_update", "g_sft_update"] + ["g_sft_update"]
    r = [x for x in rows(tmp_path / "gad" / "metrics.jsonl") if x["stage"] == "warmup"]
    assert [("loss/d" in x, "loss/g_ce" in x) for x in r] == [
        (False, True), (False, True), (True, False), (True, True), (False, True), (False, True), (True, True), (False, True)]


def test_old_logprob_forward_runs_only_with_several_policy_updates(tmp_path, tiny_args):
    rec = []
    train(tmp_path, tiny_args, "stages.gad.policy_epochs=2", recorder=rec)
    gad = rec[rec.index("ref_logprobs") - 2:]
    assert gad[:3] == ["sample", "old_logprobs", "ref_logprobs"] and gad.count("g_update") == 2 * 2
