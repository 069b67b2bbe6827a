"""`gadx eval`: judge checkpoints (and the teacher) on prompt suites, the paper's Table 2 way.

    gadx eval --model runs/seqkd --model runs/gad --name seqkd --name gad \
        --suite vicuna --suite selfinst --suite lmsys=data/lmsys_test.parquet \
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --teacher-url http://teacher:8000/v1 --teacher-model gpt-5-chat --out eval_out/

Writes OUT/results.json, OUT/results.csv, OUT/scores.png, per-prompt records in
OUT/answers/, and prints the table. Judge and teacher calls are cached in
--cache-dir (default OUT/cache): a rerun makes no repeated API calls.

Exit status: 0 the table is complete (prompts whose judge reply never parsed
are left out of a score, as the protocol says, with a warning naming how many);
1 a row has no score at all because the judge never gave a parseable score
for any of its prompts, or the judge / teacher API failed or cannot be
reached (checked before any student is loaded); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from gadx.eval.metrics import AGGREGATION
from gadx.eval.suites import load_suite


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gadx eval", description=__doc__.split("\n\n")[0],
                                epilog=AGGREGATION)
    p.add_argument("--model", action="append", default=[], help="student checkpoint folder (repeatable)")
    p.add_argument("--name", action="append", default=[], help="row name per --model (default: folder name)")
    p.add_argument("--suite", action="append", required=True,
                   help="vicuna | selfinst | mtbench | lmsys=PATH | [NAME=]FILE.jsonl|.parquet (repeatable)")
    p.add_argument("--judge-url", help="OpenAI-compatible base URL of the judge")
    p.add_argument("--judge-model", help="judge model name (the paper: gpt-4o)")
    p.add_argument("--judge-api-key-env", help="environment variable holding the judge's API key")
    p.add_argument("--teacher-url", help="also score the teacher's own answers (the paper's teacher row)")
    p.add_argument("--teacher-model")
    p.add_argument("--teacher-api-key-env")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cache-dir", help="API response caches (default OUT/cache)")
    p.add_argument("--limit", type=int, help="first N prompts of each suite")
    p.add_argument("--max-new-tokens", type=int, default=1536)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-judge", action="store_true", help="judge-free diagnostics only")
    p.add_argument("--judge-attempts", type=int, default=3, help="judge calls per prompt before 'unparseable'")
    p.add_argument("--max-usd", type=float, help="stop API spending beyond this (per client)")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p


def _check(args) -> None:
    if not args.model and not args.teacher_url:
        raise ValueError("nothing to evaluate: give --model CKPT and/or --teacher-url")
    if args.name and len(args.name) != len(args.model):
        raise ValueError(f"{len(args.name)} --name for {len(args.model)} --model")
    if not args.no_judge and not (args.judge_url and args.judge_model):
        raise ValueError("--judge-url and --judge-model are required (or pass --no-judge)")
    if bool(args.teacher_url) != bool(args.teacher_model):
        raise ValueError("--teacher-url and --teacher-model go together")
    for m in args.model:
        if not (Path(m) / "config.json").is_file():
            raise ValueError(f"--model {m}: not a checkpoint folder (no config.json)")
    for flag in ("limit", "max_new_tokens", "batch_size", "judge_attempts", "bootstrap"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        suites = [load_suite(s, limit=args.limit) for s in args.suite]
    except ValueError as e:
        print(f"gadx eval: {e}", file=sys.stderr)
        return 2
    names = args.name or [Path(m).name for m in args.model]
    if args.teacher_url:
        names = ["teacher", *names]
    if len(set(names)) != len(names):
        print(f"gadx eval: row names must be unique, got {names} (use --name)", file=sys.stderr)
        return 2
    for flag, url in (("--judge-url", None if args.no_judge else args.judge_url), ("--teacher-url", args.teacher_url)):
        if url and (why := _unreachable(url)):  # fail now, not after every student answer is generated
            print(f"gadx eval: {flag} {url}: cannot connect ({why})", file=sys.stderr)
            return 1
    from gadx.teacher import TeacherError

    try:
        return _run(args, suites, names)
    except ValueError as e:  # bad checkpoint folder, unset API key variable, prompt too long, ...
        print(f"gadx eval: {e}", file=sys.stderr)
        return 2
    except TeacherError as e:  # the judge or teacher API failed for good (the message names its URL)
        print(f"gadx eval: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _unreachable(url: str, timeout_s: float = 10.0) -> str | None:
    """Why a TCP connection to the URL's host cannot be opened, or None when it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _judge_verdict(results: dict, out: Path, attempts: int) -> int:
    """Warn about prompts left out for unparseable judge replies; 1 when a row got no score at all."""
    from gadx.eval.runner import _safe

    status = 0
    for model in results["models"]:
        for suite, r in results["results"][model].items():
            n, bad = r.get("n_prompts") or 0, r.get("n_unparseable") or 0
            if not n or not bad:
                continue
            where = out / "answers" / f"{_safe(model)}__{_safe(suite)}.jsonl"
            if bad == n:
                print(f"gadx eval: error: the judge never gave a parseable score for {model} on {suite} "
                      f"({n} prompts, {attempts} tries each): no score; its replies are in {where} (judge_raw)",
                      file=sys.stderr)
                status = 1
            else:
                print(f"gadx eval: warning: {bad} of {n} judge replies for {model} on {suite} never parsed "
                      f"(left out of the score); see {where}", file=sys.stderr)
    return status


def _run(args, suites, names) -> int:
    from contextlib import ExitStack

    from gadx.eval.generate import load_student, student_answers, teacher_answers
    from gadx.eval.judge import ClientJudge
    from gadx.eval.report import format_table, write_reports
    from gadx.eval.runner import TEACHER_ROW, run_eval

    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    clients = {}
    with ExitStack() as stack:
        def client(role, url, model, key_env):
            from gadx.teacher import TeacherClient

            c = TeacherClient(url, model, cache_path=str(cache / f"{role}.sqlite"), api_key_env=key_env,
                              max_in_flight=args.max_in_flight, max_usd=args.max_usd)
            clients[role] = stack.enter_context(c)
            return c

        judge = None
        if not args.no_judge:
            judge = ClientJudge(client("judge", args.judge_url, args.judge_model, args.judge_api_key_env),
                                max_attempts=args.judge_attempts)
        models = []
        count_tokens = None
        if args.model:
            from gadx.tokenizer import load_tokenizer

            tok = load_tokenizer(args.model[0])
            count_tokens = lambda text: len(tok.encode(text, add_special_tokens=False))  # noqa: E731
        if args.teacher_url:
            tc = client("teacher", args.teacher_url, args.teacher_model, args.teacher_api_key_env)
            models.append((TEACHER_ROW, lambda prompts: teacher_answers(
                tc, prompts, max_new_tokens=args.max_new_tokens, count_tokens=count_tokens)))
        # One checkpoint in memory at a time: run_eval finishes a model before the next.
        held: dict = {}

        def student_fn(ckpt):
            def answer(prompts):
                if held.get("ckpt") != ckpt:
                    held.clear()
                    held.update(ckpt=ckpt, student=load_student(
                        ckpt, device=args.device, max_batch=args.batch_size,
                        prompts=[p for s in suites for p in s.prompts], max_new_tokens=args.max_new_tokens))
                return student_answers(held["student"], prompts, max_new_tokens=args.max_new_tokens,
                                       batch_size=args.batch_size)
            return answer

        names_students = names[1:] if args.teacher_url else names
        models += [(n, student_fn(ckpt)) for n, ckpt in zip(names_students, args.model)]
        results = run_eval(models, suites, judge=judge, out_dir=out, n_boot=args.bootstrap, seed=args.seed)
        results["judge"] = None if args.no_judge else {"url": args.judge_url, "model": args.judge_model}
        results["api_stats"] = {role: _jsonable(c.stats()) for role, c in clients.items()}
    paths = write_reports(results, out)
    print(format_table(results))
    print("\n" + "  ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0 if args.no_judge else _judge_verdict(results, out, args.judge_attempts)


def _jsonable(x):
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)
