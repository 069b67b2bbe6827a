"""`torchrun -m gadx.train` / `gadx train`: SeqKD and GAD training of a student against a black-box teacher.

    torchrun --nproc-per-node 2 -m gadx.train                       # the embedded default (see recipes/RESULTS_embedded.md)
    python -m gadx.train --config recipes/tiny.toml --set run.seed=1
    python -m gadx.train --config recipes/seeds3.toml                # 3 seeds, aggregated table
    torchrun --nproc-per-node 2 -m gadx.train --config recipes/verdict.toml   # 3 seeds x 4 arms (issue 14)

With no config it runs the whole pipeline on the synthetic world: tokenizer,
teacher served over HTTP, a tiny student, warmup (SFT + D) and the D gate once, then
the arms from the warmup-end student (SeqKD continued, GAD, oracle-reward GRPO; run.arms)
with the same student updates on the same prompts, then a table (before / SeqKD at its
best temperature / GAD / oracle / teacher, ID and OOD, paired differences against SeqKD)
and training curves under ``run.out_dir``. ``--help`` lists every setting (config.py).
"""
from __future__ import annotations

import os
import sys

__all__ = ["main", "run_steps"]


def run_steps(cfg, n_steps, *, student, discriminator, recorder=None, checkpoint_every=0):
    """See gadx.train.run.run_steps."""
    from .run import run_steps as _run_steps

    return _run_steps(cfg, n_steps, student=student, discriminator=discriminator, recorder=recorder,
                      checkpoint_every=checkpoint_every)


FLAGS = """options:
  --config FILE      a TOML recipe (tables mirror the keys below); repeatable
  --set KEY=VALUE    override one key after the files; repeatable
  --print-config     print the resolved config as TOML (readable by --config) and exit
  --resume-anyway    run.out_dir holds a run with another config: continue it with this one
  --overwrite        run.out_dir holds a run with another config: delete its outputs (not the
                     teacher cache) and start again
  --debug            full tracebacks on errors (also GADX_DEBUG=1)
  -h, --help         this help

exit status: 0 done; 2 a usage or config error; 1 another error; 130 / 143 stopped by
SIGINT / SIGTERM after saving a checkpoint (re-run the same command to resume)."""


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("GADX_DEBUG", "") not in ("", "0")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"


def _resume_command(argv: list[str]) -> str:
    import shlex

    args = " ".join(shlex.quote(a) for a in argv if a not in ("--overwrite",))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", str(world))
        return f"torchrun --nproc-per-node {per_node} -m gadx.train {args}".rstrip()
    return f"python -m gadx.train {args}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """Errors are one line (the traceback with --debug or GADX_DEBUG=1)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = _debug(argv)
    if any(a in ("-h", "--help") for a in argv):
        from .config_help import keys_help

        print(__doc__.rstrip() + "\n\n" + FLAGS + "\n\n" + keys_help())
        return 0
    from .config import load_config

    flags = {"--debug", "--print-config", "--resume-anyway", "--overwrite"}
    try:
        cfg, rest = load_config([a for a in argv if a not in flags])
        if rest:
            raise ValueError(f"unexpected arguments {rest}; use --config FILE and --set key=value (see --help)")
        if "--resume-anyway" in argv and "--overwrite" in argv:
            raise ValueError("--resume-anyway and --overwrite exclude each other")
    except ValueError as e:
        if debug:
            raise
        print(f"gadx train: {_one_line(e)}", file=sys.stderr)
        return 2
    if "--print-config" in argv:
        from .config_help import to_toml

        print(to_toml(cfg), end="")
        return 0
    mode = "overwrite" if "--overwrite" in argv else "resume-anyway" if "--resume-anyway" in argv else "check"
    from .run import train_all
    from .stop import Interrupted

    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        return train_all(cfg, run_dir_mode=mode)
    except Interrupted as e:
        if rank0:
            print(f"gadx train: {e}\nresume with: {_resume_command(argv)}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ngadx train: interrupted outside a training step; nothing saved since the last checkpoint "
              f"(resume with: {_resume_command(argv)})", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"gadx train: {_one_line(e)}" + ("" if isinstance(e, ValueError) else
              " (the traceback: --debug or GADX_DEBUG=1)"), file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
