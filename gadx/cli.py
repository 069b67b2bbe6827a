"""The ``gadx`` command: a thin dispatcher to each subcommand's own ``main(argv)``.

Subcommands import lazily so ``gadx --help`` is instant and a missing optional
dependency of one command never breaks another.

Errors: every subcommand runs through `run_main`, which turns an exception into
one line on stderr (``gadx serve: error: ...``) and an exit status; the
traceback is printed only with ``--debug`` (anywhere on the command line) or
``GADX_DEBUG=1`` in the environment. Exit statuses shared by the commands:
    0    everything asked for was done
    1    the work failed or is incomplete (failed requests, a dead server, an
         unparseable judge, ...); the counts are printed
    2    a usage or input error: nothing was done (bad flag, missing file, port in use)
    3    stopped early on purpose: quota, budget or deadline (re-run to resume)
    130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM; what was received is kept
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

# name -> (module with a ``main(argv: list[str]) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("gadx.train", "train a student (SeqKD / warmup / GAD); same as `torchrun -m gadx.train`"),
    "serve": ("gadx.serve", "serve a checkpoint or the synthetic teacher over an OpenAI-compatible API"),
    "collect": ("gadx.collect", "collect teacher replies for a prompt file (cached, resumable)"),
    "eval": ("gadx.eval", "judge-based and judge-free evaluation of checkpoints"),
    "tokenizer": ("gadx.tokenizer.cli", "train a sentencepiece tokenizer on local text"),
    "export": ("gadx.export", "turn a trainer checkpoint (any TP/PP layout) into an HF safetensors folder"),
    "plan": ("gadx.plan", "dry-run a recipe on fake tensors: per-GPU memory and device placement, no GPU needed"),
}

DEBUG_FLAG, DEBUG_ENV = "--debug", "GADX_DEBUG"
# Mistakes in what the user asked for: nothing ran, exit 2. Anything else that escapes is a failure, exit 1.
USAGE_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def debug_enabled(argv: list[str] | None = None) -> bool:
    """True when ``--debug`` is in argv or GADX_DEBUG is set to anything but "" / "0"."""
    return (argv is not None and DEBUG_FLAG in argv) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def describe(e: BaseException) -> str:
    """One line: the message (which names the file or value), with the type when it alone says little."""
    text = " ".join(str(e).split())
    if isinstance(e, (ValueError, OSError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_main(prog: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run a subcommand's ``main(argv)`` with the shared error handling (see module doc). ``--debug`` is
    taken out of argv and exported as GADX_DEBUG=1, so child processes (torchrun ranks) see it too."""
    if DEBUG_FLAG in argv:
        argv = [a for a in argv if a != DEBUG_FLAG]
        os.environ[DEBUG_ENV] = "1"
    debug = debug_enabled()
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gadx ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint at exit
        return 141
    except Exception as e:  # noqa: BLE001 -- the whole point: one line instead of a traceback
        if debug:
            raise
        usage = isinstance(e, USAGE_ERRORS)
        hint = "" if usage else f" (run with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)"
        print(f"{prog}: error: {describe(e)}{hint}", file=sys.stderr)
        return 2 if usage else 1


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gadx [--debug] <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `gadx <command> --help` for a command's options.",
              f"Errors print one line; {DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == DEBUG_FLAG:
        argv = argv[1:] + [DEBUG_FLAG]
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

    def command(args: list[str]) -> int | None:
        # Imported inside run_main: a missing optional dependency of this command is one line too.
        return importlib.import_module(COMMANDS[name][0]).main(args)

    return run_main(f"gadx {name}", command, rest)


if __name__ == "__main__":
    raise SystemExit(main())
