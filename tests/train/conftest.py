"""Fixtures for trainer tests: a tiny embedded config and the world's sentencepiece tokenizer.

The tokenizer is trained once per session (gadx.tokenizer on the world's text,
llama3 chat template, as the embedded default does) and passed as model.tokenizer.
"""
import pytest

TOK_VOCAB = 400


@pytest.fixture(scope="session")
def world_tok(tmp_path_factory):
    from gadx.tokenizer import train_sentencepiece
    from gadx.world import World

    folder = tmp_path_factory.mktemp("world_tok")
    train_sentencepiece(World(seed=0).corpus(), folder, TOK_VOCAB, chat_template="llama3")
    return str(folder)


TINY = {
    "run.progress": "false", "run.tensorboard": "false", "run.eval_every": "2",
    "run.eval_size": "4", "run.eval_limit": "4", "data.held_out_size": "4",
    "model.hidden_size": "32", "model.intermediate_size": "64", "model.num_layers": "1",
    "model.num_heads": "2", "model.num_kv_heads": "1",
    "stages.prompts_per_step": "4", "stages.sft_prompts_per_step": "8", "stages.n_samples": "2", "stages.rollout_prompts_per_call": "2",
    "stages.max_prompt_len": "48", "stages.max_response_len": "12",
    "stages.warmup.steps": "3", "stages.warmup.g_only_steps": "1", "stages.warmup.d_only_steps": "1",
    "stages.gad.steps": "2", "stages.gad.d_gate_steps": "1", "stages.gad.d_acc_gate": "0.0",
    "parallel.micro_batch_tokens": "256",
}


def tiny_argv(out, tok, *extra):
    args = []
    for k, v in {**TINY, "run.out_dir": str(out), "model.tokenizer": tok}.items():
        args += ["--set", f"{k}={v}"]
    for e in extra:
        args += ["--set", e]
    return args


@pytest.fixture
def tiny_args(world_tok):
    return lambda out, *extra: tiny_argv(out, world_tok, *extra)
