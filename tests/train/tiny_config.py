"""The tiny embedded trainer config of the trainer tests, importable by name from test files and
worker scripts (``from tiny_config import tiny_argv``): ``conftest`` is not, since every test folder
has one and ``sys.modules["conftest"]`` is whichever pytest imported last."""


TINY = {
    "run.progress": "false", "run.tensorboard": "false", "run.eval_every": "2",
    "run.eval_size": "4", "run.eval_limit": "4", "data.held_out_size": "4",
    "run.eval_val_size": "4", "run.eval_samples": "2",  # the final table's evaluation, kept tiny
    "model.hidden_size": "32", "model.intermediate_size": "64", "model.num_layers": "1",
    "model.num_heads": "2", "model.num_kv_heads": "1",
    "stages.prompts_per_step": "4", "stages.sft_prompts_per_step": "8", "stages.n_samples": "2", "stages.rollout_prompts_per_call": "2",
    "stages.max_prompt_len": "48", "stages.max_response_len": "12",
    "stages.warmup.steps": "3", "stages.warmup.g_only_steps": "1", "stages.warmup.d_only_steps": "1",
    "stages.gad.steps": "2", "stages.gad.d_gate_steps": "1", "stages.gad.d_acc_gate": "0.0",
    "stages.gad.lr": "0.0002",  # the tiny runs (and their golden losses) keep the GAD lr they were recorded at
    "parallel.micro_batch_tokens": "256",
}


def tiny_argv(out, tok, *extra):
    args = []
    for k, v in {**TINY, "run.out_dir": str(out), "model.tokenizer": tok}.items():
        args += ["--set", f"{k}={v}"]
    for e in extra:
        args += ["--set", e]
    return args
