"""Fakes for the eval tests: a scripted judge/teacher over HTTP on 127.0.0.1, and the same script in-process.

The script (``respond``) answers a judge call (system prompt = JUDGE_SYSTEM)
by reading markers in Assistant 2's answer:
    "SCORE s r"        -> first line "r s" (reference r, evaluated answer s); default "8 7"
    "MALFORMED-ONCE"   -> the first request for that exact judge prompt gets no score line
    "MALFORMED-ALWAYS" -> never a score line
    "MISSING"          -> an empty reply
Any other call (reference or teacher answer) gets "<model> says: <last user message>".
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import re
import threading
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from gadx.eval.judge import JUDGE_SYSTEM

_A2 = re.compile(r"\[The Start of Assistant 2's Answer\]\n(.*)\n\n\[The End of Assistant 2's Answer\]", re.S)


@dataclass
class Script:
    seen: collections.Counter = field(default_factory=collections.Counter)  # judge prompt -> requests
    calls: collections.Counter = field(default_factory=collections.Counter)  # "judge" / "answer" -> requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, messages: list[dict], model: str) -> str:
        is_judge = messages[0]["role"] == "system" and messages[0]["content"] == JUDGE_SYSTEM
        with self.lock:
            self.calls["judge" if is_judge else "answer"] += 1
            if not is_judge:
                return f"{model} says: {messages[-1]['content']}"
            user = messages[-1]["content"]
            self.seen[user] += 1
            n_seen = self.seen[user]
        answer = _A2.search(user).group(1)
        m = re.search(r"SCORE (\d+) (\d+)", answer)
        s, r = (m.group(1), m.group(2)) if m else ("7", "8")
        if "MISSING" in answer:
            return ""
        if "MALFORMED-ALWAYS" in answer or ("MALFORMED-ONCE" in answer and n_seen == 1):
            return f"Assistant 1 is more detailed.\n{r} {s}"
        return f"{r} {s}\nAssistant 1 gives more detail; Assistant 2 is shorter."


@dataclass
class FakeReply:
    text: str
    finish_reason: str
    usage: dict
    cached: bool


class FakeClient:
    """In-process stand-in for TeacherClient.submit: same script, cache keyed like the real client."""

    def __init__(self, script: Script, model: str = "judge-model"):
        self.script, self.model = script, model
        self.cache: dict[str, str] = {}
        self.submits: list[dict] = []

    def submit(self, messages, *, sample_index=0, **sampling):
        self.submits.append({"sample_index": sample_index, **sampling})
        key = json.dumps([messages, sample_index, sampling], sort_keys=True)
        cached = key in self.cache
        if not cached:
            self.cache[key] = self.script.respond(messages, self.model)
        text = self.cache[key]
        fut = concurrent.futures.Future()
        fut.set_result(FakeReply(text, "stop", {"completion_tokens": len(text.split())}, cached))
        return fut

    def stats(self):
        return {"submitted": len(self.submits)}


class FakeServer:
    """OpenAI chat-completions shape on 127.0.0.1:<free port>, driven by a Script."""

    def __init__(self, script: Script):
        self.script = script
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = self.script.respond(body["messages"], body["model"])
        return web.json_response({
            "id": "cmpl-fake", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(text.split())),
                      "total_tokens": 10 + max(1, len(text.split()))},
        })

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()


@pytest.fixture
def script():
    return Script()


@pytest.fixture
def fake_client(script):
    return FakeClient(script)


@pytest.fixture
def fake_server(script):
    server = FakeServer(script)
    yield server
    server.close()


@pytest.fixture
def prompt_file(tmp_path):
    """A 4-prompt JSONL suite whose questions carry the script's markers."""
    rows = [
        {"id": "a", "prompt": "Name a colour. SCORE 9 6"},
        {"id": "b", "messages": [{"role": "user", "content": "Say hi."}]},
        {"id": "c", "prompt": "Count to three. MALFORMED-ONCE"},
        {"id": "d", "prompt": "Write a haiku. MALFORMED-ALWAYS"},
    ]
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
