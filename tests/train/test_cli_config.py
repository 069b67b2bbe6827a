"""`python -m gadx.train`: --help lists every key, --print-config, range checks, one-line errors
(tracebacks behind --debug / GADX_DEBUG=1), and the run directory's own config."""
import json
import tomllib

import pytest

from gadx.train import main
from gadx.train.config import TrainConfig, load_config


def _err(capsys):
    return capsys.readouterr().err.strip()


def test_help_lists_every_key_with_type_and_default(capsys):
    from gadx.train.config_help import config_keys

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = config_keys()
    assert len(rows) > 80
    for key, typ, default, _ in rows:
        line = next((line for line in out.splitlines() if line.split() and line.split()[0] == key), None)
        assert line is not None, key
        assert typ in line and f"= {json.dumps(default)}" in line, line
    assert "stages.gad.steps" in out and "# held-out pairwise accuracy" in out  # the comments come along


def test_print_config_is_the_resolved_config_as_toml(tmp_path, capsys):
    assert main(["--set", "stages.gad.steps=7", "--set", "run.seed=3", "--print-config"]) == 0
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert data["stages"]["gad"]["steps"] == 7 and data["run"]["seed"] == 3
    f = tmp_path / "resolved.toml"
    f.write_text(text)
    cfg, _ = load_config(["--config", str(f)])
    want, _ = load_config(["--set", "stages.gad.steps=7", "--set", "run.seed=3"])
    assert cfg == want


@pytest.mark.parametrize("assignment, match", [
    ("stages.prompts_per_step=0", "stages.prompts_per_step must be >= 1, got 0"),  # was ZeroDivisionError
    ("stages.gad.steps=-5", "stages.gad.steps must be >= 0, got -5"),
    ("stages.warmup.steps=-1", "stages.warmup.steps must be >= 0, got -1"),
    ("stages.temperature=-0.5", r"stages.temperature must be > 0, got -0.5"),
    ("stages.temperature=0", r"stages.temperature must be > 0, got 0.0"),
    ("teacher.temperature=-1", r"teacher.temperature must be in \[0, 2\], got -1.0"),
    ("stages.gad.lr=nan", "stages.gad.lr must be >= 0, got nan"),
    ("stages.gad.kl_coef=inf", "stages.gad.kl_coef must be >= 0, got inf"),
    ("run.seed=-2", "run.seed must be >= 0, got -2"),
    ("run.checkpoint_minutes=-1", "run.checkpoint_minutes must be >= 0"),
    ("stages.seqkd.steps=-2", "stages.seqkd.steps must be >= -1, got -2"),
])
def test_numeric_keys_are_range_checked_in_one_line(assignment, match, capsys):
    with pytest.raises(ValueError, match=match) as e:
        load_config(["--set", assignment])
    assert "\n" not in str(e.value)
    assert main(["--set", assignment]) == 2
    err = _err(capsys)
    assert "\n" not in err and assignment.split("=")[0] in err and "Traceback" not in err


def test_every_numeric_default_is_in_range():
    from gadx.train.config_checks import check_ranges

    check_ranges(TrainConfig())


def test_default_checkpoint_interval_bounds_lost_work():
    assert 0 < TrainConfig().run.checkpoint_minutes <= 10


def _corrupt_student(tmp_path, world_tok):
    from gadx.tokenizer import load_tokenizer
    from tiny_models import save_student

    folder = save_student(tmp_path / "student", load_tokenizer(world_tok), seed=1)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated mid-header
    return folder, weights


def test_corrupt_safetensors_is_one_line_error_naming_the_file(tmp_path, tiny_args, world_tok, capsys, monkeypatch):
    folder, weights = _corrupt_student(tmp_path, world_tok)
    monkeypatch.delenv("GADX_DEBUG", raising=False)
    argv = tiny_args(tmp_path / "out", f"model.student={folder}", "run.plan=seqkd")
    assert main(argv) == 2
    err = _err(capsys).splitlines()
    last = err[-1]
    assert last.startswith("gadx train: ") and str(weights) in last and "safetensors" in last, err[-5:]
    assert not any("Traceback" in line for line in err)


def test_debug_flag_and_env_show_the_traceback(tmp_path, tiny_args, world_tok, monkeypatch):
    folder, _ = _corrupt_student(tmp_path, world_tok)
    argv = tiny_args(tmp_path / "out", f"model.student={folder}", "run.plan=seqkd")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        main([*argv, "--debug"])
    monkeypatch.setenv("GADX_DEBUG", "1")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        main(argv)


# ---- the run directory's config ------------------------------------------------------------------


def test_run_dir_config_is_written_and_a_changed_config_stops(tmp_path):
    from gadx.train.rundir import prepare_run_dir

    cfg, _ = load_config(["--set", f"run.out_dir={tmp_path}"])
    prepare_run_dir(cfg)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(cfg.to_json())
    prepare_run_dir(cfg)  # same config: fine
    moved, _ = load_config(["--set", f"run.out_dir={tmp_path}", "--set", "parallel.tp=2", "--set", "run.max_steps=3"])
    prepare_run_dir(moved)  # layout and step limits may change on resume
    changed, _ = load_config(["--set", f"run.out_dir={tmp_path}", "--set", "stages.gad.lr=0.1",
                              "--set", "run.seed=4"])
    with pytest.raises(ValueError, match=r"2 difference\(s\): run.seed: 0 -> 4; stages.gad.lr: 0.0005 -> 0.1") as e:
        prepare_run_dir(changed)
    assert "\n" not in str(e.value) and "--resume-anyway" in str(e.value) and "--overwrite" in str(e.value)


def test_resume_anyway_and_overwrite(tmp_path):
    from gadx.train.rundir import prepare_run_dir

    cfg, _ = load_config(["--set", f"run.out_dir={tmp_path}"])
    prepare_run_dir(cfg)
    for name in ("gad/checkpoints/step-000001/meta.json", "gad/metrics.jsonl", "results.md", "teacher_cache.sqlite",
                 "seed1/teacher_cache.sqlite", "seed1/gad/metrics.jsonl", "tokenizer/tokenizer.model"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    changed, _ = load_config(["--set", f"run.out_dir={tmp_path}", "--set", "stages.gad.lr=0.1"])
    prepare_run_dir(changed, "resume-anyway")
    assert (tmp_path / "gad" / "metrics.jsonl").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["stages"]["gad"]["lr"] == 0.1  # the folder's config now
    again, _ = load_config(["--set", f"run.out_dir={tmp_path}", "--set", "stages.gad.lr=0.2"])
    prepare_run_dir(again, "overwrite")
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["config.json", "seed1/teacher_cache.sqlite", "teacher_cache.sqlite"]  # paid replies are kept


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    from gadx.train.rundir import prepare_run_dir

    (tmp_path / "thesis.tex").write_text("x")
    cfg, _ = load_config(["--set", f"run.out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="does not look like a gadx run directory"):
        prepare_run_dir(cfg, "overwrite")
    assert (tmp_path / "thesis.tex").is_file()


def test_cli_stops_on_a_changed_config(tmp_path, capsys):
    cfg, _ = load_config(["--set", f"run.out_dir={tmp_path}"])
    (tmp_path / "config.json").write_text(cfg.to_json())
    assert main(["--set", f"run.out_dir={tmp_path}", "--set", "stages.gad.steps=3"]) == 2
    err = _err(capsys)
    assert "stages.gad.steps: 40 -> 3" in err and "\n" not in err
