"""`gadx serve`: the official openai SDK works against it unchanged; errors look like OpenAI's."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")

from gadx.serve import EchoBackend, ServeConfig, start_in_thread  # noqa: E402
from gadx.teacher import TeacherClient  # noqa: E402


@pytest.fixture
def server():
    with start_in_thread(EchoBackend(), config=ServeConfig(max_tokens_limit=64, max_body_bytes=4096)) as h:
        yield h


def post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openai_sdk_sync_and_models(server):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "one two three"}],
                                       max_tokens=2, temperature=0.0)
    assert r.choices[0].message.content == "three two"
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 2, 5)
    assert [m.id for m in client.models.list().data] == ["echo"]


def test_openai_sdk_streaming_with_usage(server):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    text = "the quick brown fox jumps over the lazy dog " * 3
    stream = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": text}],
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == " ".join(text.split()[::-1])
    assert len(pieces) > 3 and finish == "stop"
    assert usage is not None and usage.completion_tokens == 27 and usage.prompt_tokens == 27


def test_openai_sdk_async_streaming_without_usage(server):
    import asyncio

    async def run():
        client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b"}],
                                                      stream=True)
        chunks = [c async for c in stream]
        await client.close()
        return chunks

    chunks = asyncio.run(run())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "b a"
    assert all(c.usage is None for c in chunks)


def test_errors_are_openai_shaped(server):
    url = server.url + "/chat/completions"
    status, body = post(url, b'{"messages": [')
    assert status == 400 and "JSON" in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    status, body = post(url, json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 65}).encode())
    assert status == 400 and body["error"]["param"] == "max_tokens"
    status, body = post(url, json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode())
    assert status == 413 and "limit" in body["error"]["message"]
    status, body = post(url, json.dumps({"messages": []}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}], max_tokens=100)


def test_bearer_token(monkeypatch):
    with start_in_thread(EchoBackend(), config=ServeConfig(api_key="s3cret")) as h:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=h.url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=h.url, api_key="s3cret", max_retries=0)
        assert ok.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x y"}]) \
            .choices[0].message.content == "y x"
        with urllib.request.urlopen(h.url.removesuffix("/v1") + "/health", timeout=5) as r:  # no token needed
            assert json.loads(r.read())["status"] == "ok"


class SlowBackend(EchoBackend):
    def __init__(self):
        self.sizes: list[int] = []

    def generate(self, batch):
        self.sizes.append(len(batch))
        time.sleep(0.1)
        return super().generate(batch)


def test_concurrent_requests_are_batched():
    backend = SlowBackend()
    with start_in_thread(backend, config=ServeConfig(max_batch=8, batch_wait_s=0.02)) as h:
        client = openai.OpenAI(base_url=h.url, api_key="unused", max_retries=0)
        out = [None] * 16

        def one(i):
            out[i] = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": f"{i} x"}])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert [o.choices[0].message.content for o in out] == [f"x {i}" for i in range(16)]
    assert sum(backend.sizes) == 16 and max(backend.sizes) <= 8 and len(backend.sizes) <= 6


def test_backend_failure_is_a_500_error_body():
    class Broken(EchoBackend):
        def generate(self, batch):
            raise RuntimeError("GPU on fire")

    with start_in_thread(Broken()) as h:
        status, body = post(h.url + "/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode())
    assert status == 500 and "GPU on fire" in body["error"]["message"]


def test_stop_strings():
    with start_in_thread(EchoBackend()) as h:
        client = openai.OpenAI(base_url=h.url, api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "c STOP b a"}],
                                           stop=["STOP"])
    assert r.choices[0].message.content == "a b " and r.choices[0].finish_reason == "stop"


def test_teacher_client_against_gadx_serve(tmp_path):
    with start_in_thread(EchoBackend()) as h:
        with TeacherClient(h.url, "echo", cache_path=tmp_path / "c.sqlite", max_in_flight=16) as t:
            futs = [t.submit([{"role": "user", "content": f"w{i} v{i}"}], max_tokens=8) for i in range(40)]
            assert [f.result(timeout=10).text for f in futs] == [f"v{i} w{i}" for i in range(40)]
            assert t.stats()["ok"] == 40


def test_synthetic_backend_if_world_is_there():
    world = pytest.importorskip("gadx.world")
    if not hasattr(world, "SyntheticTeacher") or not hasattr(world, "World"):
        pytest.skip("gadx.world has no SyntheticTeacher yet")
    from gadx.serve import SyntheticBackend

    w = world.World(seed=0)
    prompt = w.split("train")[0].prompt
    with start_in_thread(SyntheticBackend(seed=0)) as h:
        client = openai.OpenAI(base_url=h.url, api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": prompt}], seed=3,
                                           max_tokens=256, temperature=1.0)
        again = client.chat.completions.create(model="x", messages=[{"role": "user", "content": prompt}], seed=3,
                                               max_tokens=256, temperature=1.0)
    assert r.choices[0].message.content == again.choices[0].message.content  # same seed, same reply
    assert w.teacher.logprob(prompt, r.choices[0].message.content) > float("-inf")


def test_main_rejects_missing_key_env(monkeypatch, capsys):
    from gadx.serve import main

    monkeypatch.delenv("GADX_NO_SUCH_KEY", raising=False)
    assert main(["--echo", "--api-key-env", "GADX_NO_SUCH_KEY"]) == 2
    assert "GADX_NO_SUCH_KEY" in capsys.readouterr().err


def test_latency_is_added_to_every_answer_concurrently(tmp_path):
    """--latency-ms stands in for a remote API: each answer waits it out, all at once (not one by one)."""
    with pytest.raises(ValueError, match="-0.5"):
        ServeConfig(latency_s=-0.5)
    with start_in_thread(EchoBackend(), config=ServeConfig(latency_s=0.4)) as h:
        with TeacherClient(h.url, "echo", cache_path=tmp_path / "c.sqlite", max_in_flight=16) as t:
            t0 = time.perf_counter()
            futs = [t.submit([{"role": "user", "content": f"w{i} v{i}"}], max_tokens=8) for i in range(8)]
            assert [f.result(timeout=10).text for f in futs] == [f"v{i} w{i}" for i in range(8)]
            took = time.perf_counter() - t0
    assert 0.4 <= took < 0.4 * 4, took  # >= one latency, far below eight in a row (3.2 s)


def test_main_rejects_negative_latency(capsys):
    from gadx.serve import main

    assert main(["--echo", "--latency-ms", "-1"]) == 2
    assert "--latency-ms must be >= 0, got -1" in capsys.readouterr().err
