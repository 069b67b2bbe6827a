"""`gadx collect`: teacher replies for a prompt file, N per prompt, cached and resumable.

    gadx collect --input prompts.jsonl --output replies.jsonl -n 4 \\
        --base-url https://api.openai.com/v1 --model gpt-5-chat-latest --api-key-env OPENAI_API_KEY \\
        --temperature 1.0 --max-tokens 1024 --rpm 500 --tpm 500000 --max-usd 100
    gadx collect --input prompts.parquet --output replies.parquet --synthetic   # embedded synthetic teacher

Input (.jsonl or .parquet) rows carry the prompt in `messages` (a list of
{role, content}), `content` (the same list; the paper's released file), or
`prompt` (plain text, sent as one user message); `--column` picks another.
Every row is checked before the first request. Output rows: index,
sample_index, messages, teacher_response, finish_reason, prompt_tokens,
completion_tokens, cached, error.

Every reply is committed to the SQLite cache (`--cache`, default
OUTPUT.cache.sqlite) before it counts as done, so re-running the same command
resumes: committed replies are never requested again. Ctrl-C writes the output
with everything received so far.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
from pathlib import Path
from typing import Any

ROLES = ("system", "developer", "user", "assistant")
COLUMNS = ("messages", "content", "prompt")


def _read_rows(path: Path, column: str | None) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        values = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{line_no}: each line must be a JSON object, got {type(row).__name__}")
                col = column or next((c for c in COLUMNS if c in row), None)
                if col is None or col not in row:
                    raise ValueError(f"{path}:{line_no}: no {column or ' / '.join(COLUMNS)} field in {sorted(row)}")
                values.append(row[col])
        return values
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        col = column or next((c for c in COLUMNS if c in names), None)
        if col is None or col not in names:
            raise ValueError(f"{path}: no {column or ' / '.join(COLUMNS)} column in {names}")
        return pq.read_table(path, columns=[col]).column(col).to_pylist()
    raise ValueError(f"{path}: input must be .jsonl or .parquet")


def read_prompts(path: str | Path, *, column: str | None = None, system: str | None = None) -> list[list[dict]]:
    """Every row as a chat message list; ValueError naming the first bad row."""
    path = Path(path)
    prompts = []
    for i, value in enumerate(_read_rows(path, column)):
        where = f"{path}: row {i}"
        if isinstance(value, str):
            if not value.strip():
                raise ValueError(f"{where}: empty prompt")
            msgs = [{"role": "user", "content": value}]
        elif isinstance(value, list) and value:
            msgs = []
            for j, m in enumerate(value):
                if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise ValueError(f"{where}: message {j} must be {{role: {'|'.join(ROLES)}, content: str}}, got {m!r:.200}")
                msgs.append({"role": m["role"], "content": m["content"]})
            if msgs[-1]["role"] == "assistant":
                raise ValueError(f"{where}: the last message is the assistant's; the teacher must answer a user turn")
        else:
            raise ValueError(f"{where}: prompt must be a string or a non-empty message list, got {value!r:.200}")
        if system is not None and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system})
        prompts.append(msgs)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """JSONL or Parquet, written to a temporary file and renamed, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gadx collect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help=".jsonl or .parquet prompt file")
    p.add_argument("--output", required=True, help=".jsonl or .parquet reply file")
    p.add_argument("--cache", help="SQLite reply cache (default: OUTPUT.cache.sqlite)")
    p.add_argument("--column", help="prompt column (default: messages, content or prompt)")
    p.add_argument("--system", help="system message to prepend where a prompt has none")
    p.add_argument("-n", "--samples", type=int, default=1, help="replies per prompt")
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    teacher.add_argument("--synthetic", action="store_true", help="serve the embedded synthetic teacher in-process")
    p.add_argument("--model", help="model name sent to the server (required with --base-url)")
    p.add_argument("--api-key-env", help="environment variable holding the API key")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--seed", type=int, help="sent as seed + sample_index")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--rpm", type=float)
    p.add_argument("--tpm", type=float)
    p.add_argument("--max-usd", type=float)
    p.add_argument("--timeout-s", type=float, default=600.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                "seed": args.seed}
    try:
        if args.base_url and not args.model:
            raise ValueError("--model is required with --base-url")
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        prompts = read_prompts(args.input, column=args.column, system=args.system)
    except (OSError, ValueError) as e:
        print(f"gadx collect: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from gadx.teacher import BudgetExceeded, ClientClosed, QuotaExceeded, TeacherClient, TeacherError

    server = None
    base_url = args.base_url
    if args.synthetic:
        from gadx.serve import SyntheticBackend, start_in_thread

        backend = SyntheticBackend()
        server = start_in_thread(backend)
        base_url = server.url
        args.model = args.model or backend.name
    cache = args.cache or args.output + ".cache.sqlite"
    jobs = [(i, s) for i in range(len(prompts)) for s in range(args.samples)]
    results: dict[tuple[int, int], Any] = {}
    done: queue.SimpleQueue = queue.SimpleQueue()  # (job, future) as each future resolves
    status = 0
    client = TeacherClient(base_url, args.model, cache_path=cache, api_key_env=args.api_key_env,
                           max_in_flight=args.max_in_flight, rpm=args.rpm, tpm=args.tpm, max_usd=args.max_usd,
                           timeout_s=args.timeout_s)
    try:
        try:
            for i, s in jobs:  # every request is checked before the first one is sent
                client.key(prompts[i], sample_index=s, **sampling)
        except ValueError as e:
            print(f"gadx collect: prompt {i}: {e}", file=sys.stderr)
            return 2
        window = max(4 * args.max_in_flight, 64)  # submitted but unfinished: bounds memory for huge inputs
        bar = tqdm(total=len(jobs), unit="reply", dynamic_ncols=True, file=sys.stderr)
        counts = {"cached": 0, "failed": 0}
        submitted = finished = 0
        try:
            while finished < len(jobs):
                while submitted < len(jobs) and submitted - finished < window:
                    i, s = jobs[submitted]
                    fut = client.submit(prompts[i], sample_index=s, **sampling)
                    fut.add_done_callback(lambda f, job=(i, s): done.put((job, f)))
                    submitted += 1
                try:
                    job, fut = done.get(timeout=0.5)
                except queue.Empty:
                    continue
                finished += 1
                exc = fut.exception()
                if isinstance(exc, (QuotaExceeded, BudgetExceeded)):
                    raise exc
                results[job] = exc if exc is not None else fut.result()
                if exc is not None:
                    counts["failed"] += 1
                elif results[job].cached:
                    counts["cached"] += 1
                st = client.stats()
                bar.set_postfix(cached=counts["cached"], failed=counts["failed"],
                                tok=st["prompt_tokens"] + st["completion_tokens"], usd=f"{st['cost_usd']:.4f}",
                                refresh=False)
                bar.update(1)
        except KeyboardInterrupt:
            print("\ngadx collect: interrupted; writing what was received (re-run to resume)", file=sys.stderr)
            status = 130
        except (QuotaExceeded, BudgetExceeded) as e:
            print(f"\ngadx collect: stopped: {e}", file=sys.stderr)
            status = 1
        finally:
            bar.close()
    finally:
        client.close()
        if server is not None:
            server.stop()
    while True:  # replies that arrived after an interrupt are kept too
        try:
            job, fut = done.get_nowait()
        except queue.Empty:
            break
        if job not in results and fut.exception() is None:
            results[job] = fut.result()
    rows = []
    for (i, s) in jobs:
        r = results.get((i, s))
        if r is None or isinstance(r, ClientClosed):
            continue
        row = {"index": i, "sample_index": s, "messages": prompts[i]}
        if isinstance(r, TeacherError):
            row.update(teacher_response=None, finish_reason=None, prompt_tokens=None, completion_tokens=None,
                       cached=False, error=str(r))
        else:
            row.update(teacher_response=r.text, finish_reason=r.finish_reason,
                       prompt_tokens=r.usage["prompt_tokens"], completion_tokens=r.usage["completion_tokens"],
                       cached=r.cached, error=None)
        rows.append(row)
    write_rows(args.output, rows)
    n_ok = sum(r["error"] is None for r in rows)
    print(f"gadx collect: {n_ok}/{len(jobs)} replies, {len(rows) - n_ok} failed -> {args.output} "
          f"(cache {cache})", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
