"""One teacher fetch per job: global rank 0 asks the teacher, every rank receives token ids.

    feed = TeacherFeed(batches, remote=True, client=client_on_rank0_else_None, encode=env.reply_ids)
    ids = feed.get(indices, share)     # every rank, each step: its share of the step's reply ids
    texts = fetch_texts(client_on_rank0_else_None, requests, remote=True)  # every rank: replies as text

Why: with a client on every rank, the TP and PP ranks of a data-parallel replica (and every
node) asked the teacher the same prompts: duplicate paid calls, rate limits and the budget
per process instead of per job, many processes writing one SQLite WAL file (unsafe on network
filesystems) and, with a stochastic teacher, two TP ranks of a replica packing different
replies and running mismatched collectives (a hang or silent corruption). Here only global
rank 0 holds the ``TeacherClient`` (one session, one cache, the job's limits and budget) and
the ``Prefetcher`` keeps the whole job's next ``depth`` steps in flight there.

Token ids, not text, go over the wire: rank 0 tokenizes each reply once and every rank
trains on the very same ids (no per-rank tokenizer to drift, e.g. a tokenizer folder that
differs between nodes); the ids are already truncated to ``stages.max_response_len``, so a
long reply costs at most that many int32s per prompt (4 bytes per token, about what its
UTF-8 text would cost); and they are plain integer tensors, which NCCL can carry (it
cannot carry Python objects without a host round trip through pickle). Every rank of the
job receives the whole step (one broadcast from rank 0 over the world group, two with the
lengths) and keeps its data-parallel share: a step of 256 prompts x 1536 tokens is 1.5 MB.

Teacher failures travel the same way: a status word in the lengths tensor and the message in
place of the first reply, so every rank raises instead of waiting forever for rank 0.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist

OK, FAILED = 0, 1  # the status word of a broadcast


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def comm_device() -> torch.device:
    """Where a broadcast buffer must live for the default process group's backend."""
    if _world() > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_seqs(seqs: list[list[int]] | None, n: int, *, status: int = OK,
                   dtype: torch.dtype = torch.int32) -> tuple[int, list[list[int]]]:
    """Rank 0's ``n`` integer sequences (and a status word) on every rank of the default group.

    Collective: every rank calls it with the same ``n``; ``seqs`` matters on rank 0 only.
    Two broadcasts: [status, len_0 .. len_{n-1}] (int64), then the concatenation (``dtype``)."""
    if _world() == 1:
        assert seqs is not None and len(seqs) == n
        return status, [list(s) for s in seqs]
    dev = comm_device()
    if _rank() == 0:
        assert seqs is not None and len(seqs) == n, (None if seqs is None else len(seqs), n)
        head = torch.tensor([status] + [len(s) for s in seqs], dtype=torch.int64)
        flat = torch.tensor([x for s in seqs for x in s], dtype=dtype)
    else:
        head = torch.empty(n + 1, dtype=torch.int64)
    head = head.to(dev)
    dist.broadcast(head, src=0)
    head_l = head.tolist()  # data loading, before the step: the host needs the lengths anyway
    lengths = head_l[1:]
    total = sum(lengths)
    if _rank() != 0:
        flat = torch.empty(total, dtype=dtype)
    if total:
        flat = flat.to(dev)
        dist.broadcast(flat, src=0)
    flat_l = flat.tolist()
    out, at = [], 0
    for k in lengths:
        out.append(flat_l[at : at + k])
        at += k
    return head_l[0], out


def _from_rank0(make: Callable[[], list[list[int]]], n: int, dtype: torch.dtype) -> list[list[int]]:
    """Collective: rank 0 runs ``make()`` -> ``n`` sequences and every rank receives them; if
    ``make`` raised, every rank raises (rank 0 its own error, the others a RuntimeError with its
    message, sent in place of the first sequence), so no rank is left waiting for rank 0."""
    seqs, error, status = None, None, OK
    if _rank() == 0:
        try:
            seqs = make()
        except Exception as e:  # noqa: BLE001 - forwarded to every rank, then re-raised here
            error, status = e, FAILED
            seqs = [list(f"{type(e).__name__}: {e}".encode())] + [[] for _ in range(n - 1)]
    status, out = broadcast_seqs(seqs, n, status=status, dtype=dtype)
    if status == FAILED:
        if error is not None:
            raise error
        raise RuntimeError(f"teacher fetch failed on rank 0: {bytes(out[0]).decode('utf-8', 'replace')}")
    return out


class TeacherFeed:
    """Each step's teacher replies as token ids, fetched once per job by global rank 0.

    ``batches`` yields every step's requests for ALL its prompts (every data-parallel share),
    in step order: a request is a ``TeacherClient.submit`` keyword dict, or ``{"reply": text}``
    when the data already holds the reply. ``client`` is rank 0's ``TeacherClient`` (None on
    the other ranks), or None everywhere when every reply comes from files: then no rank talks
    to anyone and each tokenizes its own share. ``remote`` says which case this is (the same
    on every rank)."""

    def __init__(self, batches: Iterable[list[dict[str, Any]]], *, remote: bool, client=None,
                 encode: Callable[[str], list[int]], depth: int = 2, prefetcher: Callable | None = None):
        """``prefetcher(client, requests_per_step)``: rank 0's source of each step's answers (an
        object whose ``get()`` returns the next step's replies or exceptions, in order); default
        ``gadx.teacher.Prefetcher`` running ``depth`` steps ahead (a benchmark passes a synchronous one)."""
        self.remote, self.encode = remote, encode
        self.last_wait_s = 0.0
        self._batches: Iterator[list[dict[str, Any]]] = iter(batches)
        self._pre = None
        if remote and _rank() == 0:
            if client is None:
                raise ValueError("rank 0 needs a TeacherClient to fetch teacher replies")
            if prefetcher is None:
                from gadx.teacher import Prefetcher

                prefetcher = lambda c, asked: Prefetcher(c, asked, depth=depth)  # noqa: E731
            self._full: collections.deque[list[dict[str, Any]]] = collections.deque()
            self._pre = prefetcher(client, self._asked())

    def _asked(self) -> Iterator[list[dict[str, Any]]]:
        """The requests the teacher must answer (not the replies the data already has); the
        whole batch waits in ``_full`` until ``get`` merges the answers back in."""
        for batch in self._batches:
            self._full.append(batch)
            yield [r for r in batch if "reply" not in r]

    def get(self, indices: list[int], share: slice) -> list[list[int]]:
        """Collective: this rank's ``share`` of the next step's reply ids (``indices``: the step's
        global data indices, for error messages)."""
        t0 = time.perf_counter()
        if not self.remote:
            batch = next(self._batches)
            assert len(batch) == len(indices), (len(batch), len(indices))
            ids = [self.encode(r["reply"]) for r in batch[share]]
        else:
            ids = self._fetch(indices)[share]
        self.last_wait_s = time.perf_counter() - t0
        return ids

    def _fetch(self, indices: list[int]) -> list[list[int]]:
        return _from_rank0(lambda: self._rank0_ids(indices), len(indices), torch.int32)

    def _rank0_ids(self, indices: list[int]) -> list[list[int]]:
        answers = iter(self._pre.get())
        batch = self._full.popleft()
        assert len(batch) == len(indices), (len(batch), len(indices))
        out = []
        for i, req in zip(indices, batch):
            if "reply" in req:
                out.append(self.encode(req["reply"]))
                continue
            rep = next(answers)
            if isinstance(rep, Exception):
                raise RuntimeError(f"teacher request for prompt {i} failed: {rep}")
            out.append(self.encode(rep.text))
        return out

    def close(self) -> None:
        pass


def fetch_texts(client, requests: list[dict[str, Any]], *, remote: bool) -> list[str]:
    """Collective: the teacher's replies to ``requests`` (``submit`` keyword dicts, or
    ``{"reply": text}``) as text on every rank; only rank 0 asks (``client`` there). Text goes
    over the wire as UTF-8 bytes in a uint8 tensor."""
    if not remote or not requests:
        return [r["reply"] for r in requests]

    def make() -> list[list[int]]:
        futs = [None if "reply" in r else client.submit(**r) for r in requests]
        texts = [r["reply"] if f is None else f.result().text for r, f in zip(requests, futs)]
        return [list(t.encode("utf-8")) for t in texts]

    return [bytes(s).decode("utf-8") for s in _from_rank0(make, len(requests), torch.uint8)]
