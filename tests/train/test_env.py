"""Env (gadx/train/env.py) is its three parts: the names the trainer reads are the parts' own
objects, and a later seed's config (run.py sets env.cfg once per seed) reaches every part."""
import dataclasses

import torch

from gadx.train.config import load_config

TEXT = "the cat sat on the mat and the dog sat on the log"


def test_env_names_are_its_parts_and_a_new_config_reaches_them(tmp_path, tiny_args):
    from gadx.train.env import Env

    cfg, _ = load_config(tiny_args(tmp_path))
    env = Env(cfg)
    try:
        assert env.tok is env.data.tok and env.train is env.data.train and env.model_cfg is env.models.model_cfg
        assert env.request(0) == env.teacher.request(env.train[0])
        assert len(env.reply_ids(TEXT)) == min(len(env.tok.encode(TEXT)) + 1, cfg.stages.max_response_len) > 2
        first = env.initial_student_state()
        assert env.initial_student_state() is first  # drawn once per seed

        later = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=cfg.run.seed + 1),
                                    stages=dataclasses.replace(cfg.stages, max_response_len=2))
        env.cfg = later
        assert env.cfg is env.data.cfg is env.models.cfg is env.teacher.cfg is later
        assert len(env.reply_ids(TEXT)) == 2  # RunData reads the new stages
        second = env.initial_student_state()  # ModelFactory draws the new seed's student
        assert any(not torch.equal(second[k], first[k]) for k in first if torch.is_tensor(first[k]))
    finally:
        env.close()
