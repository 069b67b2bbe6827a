"""Replies bought vs received when `gadx collect` is stopped and killed: a scripted drill.

    python tools/collect_kill_drill.py                 # 400 prompts, Ctrl-C at 100, SIGKILL at 250, then finish
    python tools/collect_kill_drill.py --n 400 --int-at 100 --kill-at 250 --latency-s 0.3 --max-in-flight 8

A local OpenAI-compatible server (127.0.0.1, a fixed latency per request) counts
every request that reaches it: on a paid API each one may be billed. The drill
runs `python -m gadx.collect` against it, sends SIGINT once `--int-at` replies
are committed (plus half a latency, so requests are on the wire), re-runs, sends
SIGKILL at `--kill-at` the same way, re-runs to the end, then
prints one JSON line: requests that reached the server ("bought"), distinct
replies in the output ("received"), each run's exit status and the cache's
ledger (lost = in flight at the SIGKILL, abandoned = given up at a stop).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web


class CountingServer:
    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.arrivals = 0
        self.by_prompt: collections.Counter = collections.Counter()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.url = f"http://127.0.0.1:{asyncio.run_coroutine_threadsafe(start(), self.loop).result()}/v1"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals += 1
        content = body["messages"][-1]["content"]
        self.by_prompt[content] += 1
        await asyncio.sleep(self.latency_s)
        return web.json_response({
            "id": f"c{self.arrivals}", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"re: {content}"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        })


def committed(cache: Path) -> int:
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM responses WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def run(argv: list[str], *, stop_at: int | None, sig: int | None, cache: Path, delay_s: float = 0.0) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "gadx.collect", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if stop_at is not None:
        while committed(cache) < stop_at and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(delay_s)  # half a latency later: the stop lands while requests are on the wire
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    sys.stderr.write("".join(f"  | {line}\n" for line in err.strip().splitlines()[-4:]))
    return proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--int-at", type=int, default=100)
    p.add_argument("--kill-at", type=int, default=250)
    p.add_argument("--latency-s", type=float, default=0.3)
    p.add_argument("--max-in-flight", type=int, default=8)
    args = p.parse_args()
    server = CountingServer(args.latency_s)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inp, out, cache = tmp / "p.jsonl", tmp / "r.jsonl", tmp / "c.sqlite"
        inp.write_text("".join(json.dumps({"prompt": f"prompt {i}"}) + "\n" for i in range(args.n)))
        argv = ["--input", str(inp), "--output", str(out), "--cache", str(cache), "--base-url", server.url,
                "--model", "m", "--max-in-flight", str(args.max_in_flight)]
        delay = args.latency_s / 2
        status = [run(argv, stop_at=args.int_at, sig=signal.SIGINT, cache=cache, delay_s=delay)]
        status.append(run(argv, stop_at=args.kill_at, sig=signal.SIGKILL, cache=cache, delay_s=delay))
        status.append(run(argv, stop_at=None, sig=None, cache=cache))
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        with sqlite3.connect(cache) as db:
            ledger = dict(db.execute("SELECT event, COUNT(*) FROM ledger GROUP BY event").fetchall())
    received = len({r["index"] for r in rows if r["error"] is None})
    print(json.dumps({"prompts": args.n, "bought": server.arrivals, "received": received,
                      "bought_twice": sum(c > 1 for c in server.by_prompt.values()), "exit_statuses": status,
                      "ledger": ledger, "load_avg_1m": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
