import pytest

from gadx.plan.fakedev import register

# The fake GPU must exist before the first backward of the process: autograd sizes its
# per-device queues once, at that first backward (conftests are imported at collection,
# before any test runs).
register()


@pytest.fixture
def clean_dist():
    """The plan poses ranks over torch's fake process group: start from no process group
    (another test may have left its own) and leave none behind."""
    import torch.distributed as dist

    from gadx.parallel import current_parallel, destroy_parallel

    def reset():
        if current_parallel() is not None:
            destroy_parallel()
        if dist.is_initialized():
            dist.destroy_process_group()

    reset()
    yield
    reset()


@pytest.fixture
def tiny():
    return _tiny


def _tiny(tp=1, pp=1, **extra):
    """A tiny GAD config (and its student shapes) for the dry run."""
    from gadx.train.config import load_config
    from tiny_models import student_config

    sets = {"stages.prompts_per_step": 4, "stages.n_samples": 2, "stages.max_prompt_len": 16,
            "stages.max_response_len": 8, "stages.rollout_prompts_per_call": 2, "parallel.micro_batch_tokens": 128,
            "parallel.tp": tp, "parallel.pp": pp, "data.held_out_size": 4, "run.eval_size": 4, "run.eval_limit": 4,
            **extra}
    cfg, _ = load_config([x for k, v in sets.items() for x in ("--set", f"{k}={v}")])
    mc = student_config(num_layers=2, num_kv_heads=2, eos_token_id=2)
    return cfg, mc
