"""`torchrun -m gadx.train` / `gadx train`: SeqKD and GAD training of a student against a black-box teacher.

    torchrun --nproc-per-node 2 -m gadx.train                       # the embedded default (see recipes/RESULTS_embedded.md)
    python -m gadx.train --config recipes/tiny.toml --set run.seed=1
    python -m gadx.train --config recipes/seeds3.toml                # 3 seeds, aggregated table

With no config it runs the whole pipeline on the synthetic world: tokenizer,
teacher served over HTTP, a tiny student, a SeqKD run and a warmup+GAD run with
the same student-update budget, then a table (before / SeqKD / GAD, ID and OOD)
and training curves under ``run.out_dir``. See config.py for every setting.
"""
from __future__ import annotations

import sys

__all__ = ["main", "run_steps"]


def run_steps(cfg, n_steps, *, student, discriminator, recorder=None, checkpoint_every=0):
    """See gadx.train.run.run_steps."""
    from .run import run_steps as _run_steps

    return _run_steps(cfg, n_steps, student=student, discriminator=discriminator, recorder=recorder,
                      checkpoint_every=checkpoint_every)


def main(argv: list[str] | None = None) -> int:
    from .config import load_config

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cfg, rest = load_config(argv)
        if rest:
            raise ValueError(f"unexpected arguments {rest}; use --config FILE and --set key=value")
    except ValueError as e:
        print(f"gadx train: {e}", file=sys.stderr)
        return 2
    from .run import run

    try:
        return run(cfg)
    except ValueError as e:
        print(f"gadx train: {e}", file=sys.stderr)
        return 2
