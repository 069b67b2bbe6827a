"""The ``gadx`` command: a thin dispatcher to each subcommand's own ``main(argv)``.

Subcommands import lazily so ``gadx --help`` is instant and a missing optional
dependency of one command never breaks another.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module with a ``main(argv: list[str]) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gadx.train", "train a student (SeqKD / warmup / GAD); same as `torchrun -m gadx.train`"),
    "serve": ("gadx.serve", "serve a checkpoint or the synthetic teacher over an OpenAI-compatible API"),
    "collect": ("gadx.collect", "collect teacher replies for a prompt file (cached, resumable)"),
    "eval": ("gadx.eval", "judge-based and judge-free evaluation of checkpoints"),
    "tokenizer": ("gadx.tokenizer.cli", "train a sentencepiece tokenizer on local text"),
    "plan": ("gadx.plan", "dry-run a recipe on fake tensors: per-GPU memory and device placement, no GPU needed"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gadx <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `gadx <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from gadx import __version__

        print(f"gadx {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gadx: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
