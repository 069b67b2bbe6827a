"""`gadx serve`: an OpenAI-compatible chat server for a checkpoint or the synthetic teacher.

    gadx serve --synthetic --port 8000
    gadx serve --model ckpt/teacher_hf --port 8000 --api-key-env GADX_SERVE_KEY
    # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...).chat.completions.create(...)

Endpoints: POST /v1/chat/completions (plain and SSE streaming, usage with
stream_options.include_usage), GET /v1/models, GET /health. Binds 127.0.0.1
unless --host says otherwise.

In-process (tests, the trainer's embedded teacher):

    handle = start_in_thread(SyntheticBackend(seed=0))   # a free port on 127.0.0.1
    ... TeacherClient(handle.url, ...) ...                # handle.url ends in /v1
    handle.stop()
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

from aiohttp import web

from gadx.serve.app import ServeConfig, make_app
from gadx.serve.backends import Backend, CheckpointBackend, EchoBackend, SyntheticBackend
from gadx.serve.protocol import ChatRequest, Completion

__all__ = ["Backend", "ChatRequest", "CheckpointBackend", "Completion", "EchoBackend", "ServeConfig", "ServerHandle",
           "SyntheticBackend", "main", "make_app", "start_in_thread"]


class ServerHandle:
    """A server running on its own event loop in a daemon thread."""

    def __init__(self, app: web.Application, host: str, port: int):
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gadx-serve", daemon=True)
        self._thread.start()

        async def start() -> int:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        try:
            self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result()
        except BaseException as e:
            if getattr(self, "_runner", None) is not None:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            if isinstance(e, OSError):  # port in use, no permission, unknown host: say which address
                reason = os.strerror(e.errno) if e.errno else " ".join(str(e).split())
                raise OSError(e.errno, f"cannot listen on {host}:{port}: {reason}") from e
            raise
        self.host = host
        self.url = f"http://{host}:{self.port}/v1"
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(backend: Backend, host: str = "127.0.0.1", port: int = 0,
                    config: ServeConfig | None = None) -> ServerHandle:
    """Serve `backend` from a background thread; port=0 picks a free port (see handle.url)."""
    return ServerHandle(make_app(backend, config or ServeConfig()), host, port)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0 picks a free port), got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gadx serve", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="PATH", help="HF-format checkpoint folder (config.json, safetensors, tokenizer)")
    src.add_argument("--synthetic", action="store_true", help="serve the embedded synthetic teacher")
    src.add_argument("--echo", action="store_true", help="reply with the prompt reversed (load tests)")
    p.add_argument("--seed", type=int, default=0, help="synthetic teacher seed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000, help="0..65535; 0 picks a free port")
    p.add_argument("--api-key-env", metavar="VAR", help="require 'Authorization: Bearer $VAR' on every request")
    p.add_argument("--served-model-name", help="the model id reported by /v1/models and in replies")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--max-tokens-limit", type=int, default=4096)
    p.add_argument("--default-max-tokens", type=int, default=512)
    p.add_argument("--max-body-mb", type=float, default=4.0)
    p.add_argument("--device", default="cpu", help="torch device for --model")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="add this much to every answer, concurrently and without CPU: a remote API's latency "
                        "for a teacher served on the trainer's own machine (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"gadx serve: environment variable {args.api_key_env} is empty or unset", file=sys.stderr)
            return 2
    for flag, low in (("max_batch", 1), ("max_tokens_limit", 1), ("default_max_tokens", 1)):
        if getattr(args, flag) < low:
            print(f"gadx serve: --{flag.replace('_', '-')} must be >= {low}, got {getattr(args, flag)}",
                  file=sys.stderr)
            return 2
    if not args.latency_ms >= 0:
        print(f"gadx serve: --latency-ms must be >= 0, got {args.latency_ms}", file=sys.stderr)
        return 2
    for flag in ("batch_wait_ms", "max_body_mb"):
        if not getattr(args, flag) > 0:
            print(f"gadx serve: --{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    if args.default_max_tokens > args.max_tokens_limit:
        print(f"gadx serve: --default-max-tokens {args.default_max_tokens} is above --max-tokens-limit "
              f"{args.max_tokens_limit}", file=sys.stderr)
        return 2
    if args.synthetic:
        backend: Backend = SyntheticBackend(seed=args.seed)
    elif args.echo:
        backend = EchoBackend()
    else:
        backend = CheckpointBackend(args.model, device=args.device, max_batch=args.max_batch)  # ValueError names the file
    config = ServeConfig(api_key=api_key, max_body_bytes=int(args.max_body_mb * 2**20),
                         default_max_tokens=args.default_max_tokens, max_tokens_limit=args.max_tokens_limit,
                         max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
                         model_name=args.served_model_name, latency_s=args.latency_ms / 1000)
    try:
        handle = ServerHandle(make_app(backend, config), args.host, args.port)
    except OSError as e:  # a usage error (pick another --port / --host), so exit 2 like the others
        raise ValueError(f"--host {args.host} --port {args.port}: {e.strerror or e}") from e
    print(f"gadx serve: {config.model_name or backend.name} at {handle.url} (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    handle.stop()
    return 0
