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
resumes: committed replies are never requested again.

Stopping. Ctrl-C or SIGTERM (a scheduler's preemption): nothing new is sent,
the requests already sent get up to --drain-s seconds to come back and be
committed (a second Ctrl-C gives up on them), then the output is written with
everything received; re-run to resume. After a SIGKILL the ledger in the cache
keeps every request that had left: the next run marks the unanswered ones
'lost' (possibly billed, no reply) and says how many; it asks for them again.
--deadline-s bounds the whole run the same way; --timeout-s bounds each
request (all its retries). While requests keep failing (429s, an outage),
the progress output says what fails, since when, and when the next retry goes.

Exit status: 0 every reply is there (or was refused by the server and
--skip-refused was given); 1 some requests failed (their rows carry the error);
2 bad arguments or input (nothing sent); 3 stopped by quota, --max-usd or
--deadline-s; 130 / 143 stopped by SIGINT / SIGTERM. The counts are printed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import queue
import signal
import sys
import threading
import time
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
    p.add_argument("--output", required=True, help=".jsonl or .parquet reply file (its folder must exist)")
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
    p.add_argument("--timeout-s", type=float, default=600.0,
                   help="give up on one request after this long, all retries included (also the read timeout)")
    p.add_argument("--deadline-s", type=float, help="stop the whole run after this long (exit 3; re-run to resume)")
    p.add_argument("--drain-s", type=float, default=30.0,
                   help="on Ctrl-C / SIGTERM / deadline, wait this long for replies already sent")
    p.add_argument("--skip-refused", action="store_true",
                   help="requests the server refuses (HTTP 400/401/403/404/422) count as skipped, not failed")
    p.add_argument("--progress-every-s", type=float, default=10.0,
                   help="seconds between plain progress lines when stderr is not a terminal")
    return p


def _check_args(args) -> None:
    """ValueError naming the flag and value for anything out of range (before anything is sent)."""
    if args.base_url and not args.model:
        raise ValueError("--model is required with --base-url")
    for flag, low, inclusive in (("samples", 1, True), ("max_tokens", 1, True), ("max_in_flight", 1, True),
                                 ("temperature", 0, True), ("top_p", 0, False), ("rpm", 0, False),
                                 ("tpm", 0, False), ("max_usd", 0, False), ("timeout_s", 0, False),
                                 ("deadline_s", 0, False), ("drain_s", 0, True), ("progress_every_s", 0, False)):
        v = getattr(args, flag)
        if v is not None and (not math.isfinite(v) or v < low or (v == low and not inclusive)):
            raise ValueError(f"--{flag.replace('_', '-')} must be {'>=' if inclusive else '>'} {low}, got {v}")
    if args.top_p is not None and args.top_p > 1:
        raise ValueError(f"--top-p must be <= 1, got {args.top_p}")
    cache = args.cache or args.output + ".cache.sqlite"
    for flag, path in (("--output", args.output), ("--cache", cache)):
        folder = Path(path).resolve().parent
        if not folder.is_dir():
            raise ValueError(f"{flag} {path}: folder {folder} does not exist")
        if Path(path).is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file name")


class _Signals:
    """While active (main thread only), SIGINT and SIGTERM are noted instead of raising: the collection
    loop polls `received` and stops between two steps, so no reply already taken off the queue is
    dropped half-recorded. A SIGINT that the shell set to be ignored (a background job) stays ignored."""

    def __init__(self):
        self.received: list[int] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._old[sig] = signal.signal(sig, lambda signum, _: self.received.append(signum))
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _Progress:
    """A tqdm bar on a terminal; a plain line every `every_s` seconds otherwise (logs stay readable).
    While requests keep failing, a line says what fails, since when and when the next retry goes."""

    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="reply", dynamic_ncols=True, file=sys.stderr)
        self.t0 = self._last_line = time.monotonic()
        self._last_failing: tuple[str | None, float] = (None, 0.0)

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def show(self, finished: int, counts: dict, st: dict, *, advanced: int = 0) -> None:
        now = time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix(cached=counts["cached"], failed=counts["failed"],
                                 tok=st["prompt_tokens"] + st["completion_tokens"], usd=f"{st['cost_usd']:.4f}",
                                 refresh=False)
            self.bar.update(advanced)
        elif now - self._last_line >= self.every_s:
            self._last_line = now
            rate = finished / max(now - self.t0, 1e-9)
            self._say(f"gadx collect: {finished}/{self.total} finished ({counts['cached']} cached, "
                      f"{counts['failed']} failed), {st['prompt_tokens'] + st['completion_tokens']} tokens, "
                      f"${st['cost_usd']:.4f}, {rate:.1f}/s, {st['on_wire']} in flight")
        what = st.get("failing")
        last_what, last_t = self._last_failing
        if what is not None and (what != last_what or now - last_t >= self.every_s):
            self._last_failing = (what, now)
            since = time.strftime("%H:%M:%S", time.localtime(st["failing_since"]))
            retry = st["next_retry"]
            nxt = f"next retry in {max(retry - time.time(), 0):.1f} s" if retry else "no retry (fatal)"
            self._say(f"gadx collect: failing: {what} -- since {since} ({time.time() - st['failing_since']:.0f} s, "
                      f"{st['failures']} failures), {nxt}; {finished}/{self.total} finished")
        elif what is None and last_what is not None:
            self._last_failing = (None, 0.0)
            self._say("gadx collect: requests succeed again")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_args(args)
        prompts = read_prompts(args.input, column=args.column, system=args.system)
    except (OSError, ValueError) as e:
        print(f"gadx collect: {e}", file=sys.stderr)
        return 2
    return _collect(args, prompts)


def _collect(args, prompts: list[list[dict]]) -> int:
    from gadx.teacher import (BudgetExceeded, ClientClosed, PermanentError, QuotaExceeded, RetryPolicy,
                              TeacherClient, TeacherError)

    sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                "seed": args.seed}
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
    counts = {"cached": 0, "failed": 0}
    status, stop = 0, None  # stop: why the run ended early (a line for the user)
    try:
        client = TeacherClient(base_url, args.model, cache_path=cache, api_key_env=args.api_key_env,
                               max_in_flight=args.max_in_flight, rpm=args.rpm, tpm=args.tpm, max_usd=args.max_usd,
                               timeout_s=args.timeout_s, retry=RetryPolicy(deadline_s=args.timeout_s),
                               cache_endpoint="gadx-synthetic" if args.synthetic else None)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    signals = _Signals().__enter__()

    def record(job, fut) -> None:
        exc = fut.exception()
        if isinstance(exc, ClientClosed):
            return  # never sent (or abandoned): not done, a re-run asks again
        results[job] = exc if exc is not None else fut.result()
        if exc is not None:
            counts["failed"] += 1
        elif results[job].cached:
            counts["cached"] += 1

    progress = None
    try:
        if client.reconciled:
            print(f"gadx collect: the ledger of {cache} holds {client.reconciled} requests that a killed run left "
                  "in flight: possibly billed, no reply received; asking for them again", file=sys.stderr)
        try:
            for i, s in jobs:  # every request is checked before the first one is sent
                client.key(prompts[i], sample_index=s, **sampling)
        except ValueError as e:
            print(f"gadx collect: prompt {i}: {e}", file=sys.stderr)
            return 2
        window = max(4 * args.max_in_flight, 64)  # submitted but unfinished: bounds memory for huge inputs
        progress = _Progress(len(jobs), args.progress_every_s)
        t_end = time.monotonic() + args.deadline_s if args.deadline_s else math.inf
        submitted = finished = 0
        while finished < len(jobs):
            if signals.received:
                signum = signals.received[0]
                stop, status = f"{signal.Signals(signum).name} received", 128 + signum
                break
            while submitted < len(jobs) and submitted - finished < window:
                i, s = jobs[submitted]
                fut = client.submit(prompts[i], sample_index=s, **sampling)
                fut.add_done_callback(lambda f, job=(i, s): done.put((job, f)))
                submitted += 1
            if time.monotonic() > t_end:
                stop, status = f"the --deadline-s of {args.deadline_s:g} s passed", 3
                break
            try:
                job, fut = done.get(timeout=0.2)
            except queue.Empty:
                progress.show(finished, counts, client.stats())
                continue
            finished += 1
            record(job, fut)
            exc = fut.exception()
            if isinstance(exc, (QuotaExceeded, BudgetExceeded)):
                stop, status = str(exc), 3
                break
            progress.show(finished, counts, client.stats(), advanced=1)
        if stop is not None:
            _drain(client, args.drain_s, stop, signals)
    finally:
        if progress is not None:
            progress.close()
        client.close()
        if server is not None:
            server.stop()
        signals.__exit__()
    while True:  # replies that arrived while stopping are kept too
        try:
            job, fut = done.get_nowait()
        except queue.Empty:
            break
        if job not in results:
            record(job, fut)
    n_ok = n_failed = n_skipped = 0
    rows = []
    for (i, s) in jobs:
        r = results.get((i, s))
        if r is None:
            continue
        row = {"index": i, "sample_index": s, "messages": prompts[i]}
        if isinstance(r, TeacherError):
            row.update(teacher_response=None, finish_reason=None, prompt_tokens=None, completion_tokens=None,
                       cached=False, error=str(r))
            if args.skip_refused and isinstance(r, PermanentError):
                n_skipped += 1
            else:
                n_failed += 1
        else:
            row.update(teacher_response=r.text, finish_reason=r.finish_reason,
                       prompt_tokens=r.usage["prompt_tokens"], completion_tokens=r.usage["completion_tokens"],
                       cached=r.cached, error=None)
            n_ok += 1
        rows.append(row)
    write_rows(args.output, rows)
    n_missing = len(jobs) - len(rows)
    print(f"gadx collect: {len(jobs)} requested: {n_ok} done ({counts['cached']} from cache), {n_failed} failed, "
          f"{n_skipped} skipped, {n_missing} not done -> {args.output} (cache {cache})", file=sys.stderr)
    abandoned = client.stats()["abandoned"]
    if abandoned:
        print(f"gadx collect: {abandoned} requests were still in flight when it stopped waiting: possibly billed, "
              "no reply (ledger 'abandoned'); a re-run asks for them again", file=sys.stderr)
    if status == 0 and (n_failed or n_missing):
        status = 1
    if status:
        why = stop or f"{n_failed} requests failed (see the error column)"
        print(f"gadx collect: exit {status}: {why}" + ("; re-run the same command to resume" if n_missing else ""),
              file=sys.stderr)
    return status


def _drain(client, wait_s: float, why: str, signals: _Signals) -> None:
    """Stop sending; wait up to wait_s for the replies already on the wire (another signal ends the wait)."""
    client.stop_sending()
    n = client.on_wire()
    if not n:
        print(f"\ngadx collect: stopping: {why}", file=sys.stderr)
        return
    print(f"\ngadx collect: stopping: {why}; waiting up to {wait_s:g} s for {n} replies already sent "
          "(Ctrl-C again to give up on them)", file=sys.stderr, flush=True)
    n_signals = len(signals.received)
    t_end = time.monotonic() + wait_s
    while client.on_wire() and time.monotonic() < t_end and len(signals.received) == n_signals:
        time.sleep(0.02)


if __name__ == "__main__":
    from gadx.cli import run_main

    raise SystemExit(run_main("gadx collect", main, sys.argv[1:]))
