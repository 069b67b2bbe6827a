"""Who answers for the teacher, and how each rank gets the replies.

    teacher = TeacherLink(cfg, dims, out, samples, world)   # every rank (collective: rank 0's failure raises everywhere)
    teacher.request(sample)          # what to ask for a sample: its known reply, or messages + sampling
    teacher.feed(batches, encode)    # the step feed (gadx.train.teacher_feed.TeacherFeed)
    teacher.texts(samples)           # collective: replies as text on every rank, asked by rank 0 only
    teacher.close()

Replies come from the data or ``teacher.replies_file`` (then nobody is asked), or from an
OpenAI-compatible endpoint that only global rank 0 talks to: its ``TeacherClient`` (HTTP, cached
on disk) and, for ``teacher.base_url = "embedded"``, the synthetic world's server in a thread.
The trainer sees the teacher only through that client or the replies, in embedded mode too:
the world's teacher is a black box behind ``gadx.serve``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.distributed as dist

from .config import EMBEDDED, TrainConfig
from .data import Sample, load_samples


def _bcast(obj: Any) -> Any:
    box = [obj]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


class TeacherLink:
    def __init__(self, cfg: TrainConfig, dims, out: Path, samples: list[Sample], world=None):
        """``samples``: every train and held-out sample (a replies file fills their ``reply``);
        ``world``: the embedded world, needed for ``teacher.base_url = "embedded"``."""
        self.cfg, self.dims, self.out = cfg, dims, out
        self.client = None
        self._server = None
        self.remote = self._connect(samples, world)

    def _connect(self, samples: list[Sample], world) -> bool:
        """Only global rank 0 talks to the teacher (gadx.train.teacher_feed): it alone holds the
        client, its cache and the embedded server. Returns whether anyone is asked (the same everywhere)."""
        t = self.cfg.teacher
        if t.replies_file:
            replies = load_samples(t.replies_file)
            by_prompt = {repr(s.messages): s.reply for s in replies if s.reply is not None}
            for s in samples:
                s.reply = s.reply if s.reply is not None else by_prompt.get(repr(s.messages))
            missing = sum(s.reply is None for s in samples)
            if missing:
                raise ValueError(f"teacher.replies_file {t.replies_file!r} has no reply for {missing} prompts")
            return False
        if all(s.reply is not None for s in samples):
            return False
        if t.base_url == EMBEDDED and world is None:
            raise ValueError("teacher.base_url='embedded' needs the embedded data (data.train='embedded')")
        error = None
        if self.dims.rank == 0:
            try:
                self._open_client()
            except Exception as e:  # noqa: BLE001 - re-raised below, after the others have heard of it
                error = e
        message = _bcast(None if error is None else str(error))  # every rank fails together, none waits
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(f"rank 0 could not open the teacher: {message}")
        return True

    def _open_client(self) -> None:
        t = self.cfg.teacher
        url = t.base_url
        if url == EMBEDDED:
            from gadx.serve import start_in_thread
            from gadx.serve.backends import SyntheticBackend

            # served by the process that fetches: reachable over loopback on any node layout
            self._server = start_in_thread(SyntheticBackend(self.cfg.data.world_seed), host=t.embedded_host)
            url = self._server.url if t.embedded_host not in ("0.0.0.0", "::") \
                else f"http://127.0.0.1:{self._server.port}/v1"  # a wildcard bind: ask over loopback
        from gadx.teacher import TeacherClient

        cache = t.cache_path or str(self.out / "teacher_cache.sqlite")
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        self.client = TeacherClient(url, t.model, cache_path=cache, api_key_env=t.api_key_env or None,
                                    max_in_flight=t.max_in_flight, max_usd=t.max_usd or None)
        self._check_reachable(url)

    def _check_reachable(self, url: str) -> None:
        import urllib.error
        import urllib.request
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        try:
            with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/", timeout=5):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered
        except (urllib.error.URLError, OSError) as e:
            raise ValueError(f"teacher at {url} is unreachable ({getattr(e, 'reason', e)})") from None

    def request(self, sample: Sample) -> dict[str, Any]:
        """What to ask for ``sample``: its known reply, or its messages at the configured sampling."""
        if sample.reply is not None:
            return {"reply": sample.reply}
        t = self.cfg.teacher
        # a fixed seed makes the teacher's reply a function of the prompt: reproducible runs
        return {"messages": sample.messages, "temperature": t.temperature, "max_tokens": t.max_tokens, "seed": t.seed}

    def feed(self, batches, encode):
        """The step feed (collective ``get``): ``batches`` yields each step's requests for all of
        its prompts; rank 0 fetches them, every rank receives its share as token ids (``encode``)."""
        from .teacher_feed import TeacherFeed

        return TeacherFeed(batches, remote=self.remote, client=self.client, encode=encode,
                           depth=self.cfg.teacher.prefetch_depth)

    def cost(self) -> float:
        """Spent so far (rank 0 holds the client; 0 on the other ranks, which log nothing)."""
        return float(self.client.stats()["cost_usd"]) if self.client is not None else 0.0

    def texts(self, samples: list[Sample]) -> list[str]:
        """Collective: the teacher's replies to ``samples`` on every rank, asked by rank 0 only."""
        from .teacher_feed import fetch_texts

        return fetch_texts(self.client, [self.request(s) for s in samples], remote=self.remote)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._server is not None:
            self._server.stop()
