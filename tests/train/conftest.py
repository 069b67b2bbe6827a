"""Fixtures for trainer tests: a tiny embedded config and a char-level test tokenizer.

The test tokenizer is a test double standing in for gadx.tokenizer's trained
sentencepiece model, so trainer tests do not depend on tokenizer training time.
"""
import pytest


class CharTok:
    """ids: 0 pad, 1 bos, 2 eos, 3.. printable chars; chat template: user text + '>'."""

    pad_id, bos_id, eos_id = 0, 1, 2
    chars = "".join(chr(c) for c in range(32, 127)) + "\n"
    vocab_size = 3 + len(chars)

    def encode(self, text, add_special_tokens=False):
        return [3 + self.chars.index(c) for c in text if c in self.chars]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.chars[i - 3] for i in ids if i >= 3)

    def encode_chat(self, messages, add_generation_prompt=True):
        return [self.bos_id] + self.encode(messages[-1]["content"] + ">")


@pytest.fixture
def char_tok(monkeypatch):
    from gadx.train import setup

    tok = CharTok()
    monkeypatch.setattr(setup.Env, "_tokenizer", lambda self: tok)
    return tok


def _tiny_args(out, *extra):
    sets = {
        "run.out_dir": str(out), "run.progress": "false", "run.tensorboard": "false", "run.eval_every": "2",
        "run.eval_size": "8", "data.held_out_size": "4",
        "model.hidden_size": "32", "model.intermediate_size": "64", "model.num_layers": "1",
        "model.num_heads": "2", "model.num_kv_heads": "1",
        "stages.prompts_per_step": "4", "stages.n_samples": "2", "stages.max_prompt_len": "64",
        "stages.max_response_len": "12", "stages.warmup.steps": "3", "stages.warmup.d_only_steps": "1",
        "stages.gad.steps": "2", "stages.gad.d_gate_steps": "1", "stages.gad.d_acc_gate": "0.0",
        "parallel.micro_batch_tokens": "256",
    }
    args = []
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    for e in extra:
        args += ["--set", e]
    return args


@pytest.fixture
def tiny_args():
    return _tiny_args
