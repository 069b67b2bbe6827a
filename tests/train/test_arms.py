"""plan=compare: warmup + gate once, then the arms (SeqKD, GAD, oracle, frozen D) from its end.

One tiny main job with every arm (module fixture); each test reads one property of it:
every arm starts from the warmup-end student, bit for bit (and the GRPO arms from the same D);
the oracle arm's reward is the oracle; the arms see the same prompts; the table has every row."""
import hashlib
import json

import pytest
import torch

from gadx.train.config import load_config

pytestmark = pytest.mark.slow  # one tiny main job with 5 runs and 6 evaluations: 129 s at load 40-60


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        if torch.is_tensor(v) and "_extra_state" not in k:
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def job(tmp_path_factory, world_tok):
    """The tiny main job; records each Run's G (and D) at its start and its end."""
    from tiny_config import tiny_argv

    from gadx.train import trainer
    from gadx.train.run import train_all

    out = tmp_path_factory.mktemp("arms")
    seen = []
    players, train = trainer.Run._players, trainer.Run.train

    def players_rec(self):
        players(self)
        seen.append(("start", self.out.name, _digest(self.G.model.state_dict()),
                     _digest(self.D.model.state_dict()) if self.D is not None else None))

    def train_rec(self):
        summary = train(self)
        seen.append(("end", self.out.name, _digest(self.G.model.state_dict()),
                     _digest(self.D.model.state_dict()) if self.D is not None else None))
        return summary

    cfg, _ = load_config(tiny_argv(out, world_tok, "run.arms=seqkd,gad,oracle,frozen", "run.eval_val_size=4",
                                   "run.eval_samples=2", "run.eval_every=0"))
    mp = pytest.MonkeyPatch()
    mp.setattr(trainer.Run, "_players", players_rec)
    mp.setattr(trainer.Run, "train", train_rec)
    try:
        assert train_all(cfg) == 0
    finally:
        mp.undo()
    return out, seen


def _rows(out, arm):
    return [json.loads(line) for line in (out / arm / "metrics.jsonl").read_text().splitlines()]


def test_every_arm_starts_from_the_warmup_end_student(job):
    out, seen = job
    ends = {name: (g, d) for kind, name, g, d in seen if kind == "end"}
    starts = {name: (g, d) for kind, name, g, d in seen if kind == "start"}
    assert set(starts) == {"warmup", "seqkd", "gad", "oracle", "frozen"}
    g_end, d_end = ends["warmup"]
    assert starts["warmup"][0] != g_end  # warmup trained the student: the check below means something
    for arm in ("seqkd", "gad", "oracle", "frozen"):
        assert starts[arm][0] == g_end, arm
    for arm in ("gad", "oracle", "frozen"):
        assert starts[arm][1] == d_end, arm  # and the D the gate passed
    # the GRPO arms' first rollouts are the same samples of the same student: equal diagnostics
    first = {arm: _rows(out, arm)[0] for arm in ("gad", "oracle", "frozen")}
    for key in ("entropy", "oracle/logT_per_token", "len/student"):
        assert first["gad"][key] == first["oracle"][key] == first["frozen"][key], key


def test_arms_run_their_steps_on_the_same_prompts(job):
    out, _ = job
    stages = {arm: [r["stage"] for r in _rows(out, arm)] for arm in ("warmup", "seqkd", "gad", "oracle", "frozen")}
    assert stages["warmup"] == ["warmup"] * 3  # the gate (d_acc_gate 0) passed at its first check: no gate step
    assert stages["seqkd"] == ["seqkd"] * 2 and stages["gad"] == stages["oracle"] == stages["frozen"] == ["gad"] * 2
    # same prompts per step: the teacher replies' lengths of each step agree across the GRPO arms
    assert [r["len/teacher"] for r in _rows(out, "gad")] == [r["len/teacher"] for r in _rows(out, "oracle")]


def test_the_oracle_arm_is_rewarded_by_the_oracle_and_the_gad_arm_by_d(job):
    out, _ = job
    for r in _rows(out, "oracle"):
        assert r["reward/mean"] == pytest.approx(r["oracle/logT_per_token"], abs=1e-5)
    gad = _rows(out, "gad")
    assert any(abs(r["reward/mean"] - r["oracle/logT_per_token"]) > 1e-3 for r in gad)
    # the same D and samples at the first step: the frozen-D arm's first reward is the GAD arm's
    assert _rows(out, "frozen")[0]["reward/mean"] == gad[0]["reward/mean"]


def test_the_results_table_has_every_row(job):
    out, _ = job
    text = (out / "results.md").read_text()
    for label in ("| before | ID |", "| SeqKD (best T:", "| GAD | ID |", "| oracle (GRPO on exact log T) | OOD |",
                  "| frozen D | ID |", "| teacher | OOD |", "arm minus SeqKD", "Compute per student step"):
        assert label in text, label
    res = json.loads((out / "results.json").read_text())
    rows = res["per_seed"][0]["rows"]
    assert set(rows) == {"before", "seqkd", "gad", "oracle", "frozen", "teacher"}
    assert rows["seqkd"]["best_T_on"] == "validation"
    assert len(rows["gad"]["test"]["test_id"]["0.6"]["per_prompt_valid"]) == 4
