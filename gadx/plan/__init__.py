"""`gadx plan`: a fake-tensor dry run of the trainer (memory per GPU, device placement).

    from gadx.plan import plan_rank
    r = plan_rank(cfg, model_cfg, world=8, rank=0)      # one GAD step on a fake GPU
    r.peak, r.components, r.phases, r.host_reads

See gadx/plan/dryrun.py (what runs, what is bridged), fakedev.py (the fake GPU) and
docs/dry_run.md.
"""
from __future__ import annotations

__all__ = ["main", "plan_rank"]


def plan_rank(*args, **kwargs):
    from .dryrun import plan_rank as _plan_rank

    return _plan_rank(*args, **kwargs)


def main(argv=None) -> int:
    from .cli import main as _main

    return _main(argv)
