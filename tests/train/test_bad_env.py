import pytest

from gadx.train.config import load_config


def test_unreachable_teacher_is_one_line_error(tmp_path, tiny_args):
    from gadx.train.setup import Env

    cfg, _ = load_config(tiny_args(tmp_path, "teacher.base_url=http://127.0.0.1:9/v1"))
    with pytest.raises(ValueError, match="teacher at http://127.0.0.1:9/v1 is unreachable") as e:
        Env(cfg)
    assert "\n" not in str(e.value)


def test_cli_reports_config_errors_in_one_line(capsys):
    from gadx.train import main

    assert main(["--set", "stages.gad.stepz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gadx train: unknown config key 'stages.gad.stepz'") and "\n" not in err
