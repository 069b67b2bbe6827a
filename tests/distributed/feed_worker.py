"""One rank of the teacher-feed check (no model): gadx.train.teacher_feed over gloo with a
teacher at URL, for STEPS steps of 4 prompts (one of them with its reply already in the data).
MODE "tp": every rank is one replica's rank and takes the whole step; "dp": each rank is a
replica and takes its half. Then a step with a prompt the teacher refuses (every rank must
raise, none may hang) and one fetch_texts call. Both modes in one launch, each against its own
teacher URL; writes OUT/<mode>-rank{R}.json.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
        python tests/distributed/feed_worker.py OUT URL_TP URL_DP
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STEPS = 3


def prompt(step: int, j: int) -> str:
    return f"step {step} prompt {j}" + (" REFUSE" if step == STEPS and j == 1 else "")


def batches():
    step = 0
    while True:
        yield [{"reply": f"from the data {step}"} if j == 3 else
               {"messages": [{"role": "user", "content": prompt(step, j)}], "temperature": 1.0, "max_tokens": 16,
                "seed": 0} for j in range(4)]
        step += 1


if __name__ == "__main__":
    import torch.distributed as dist

    from gadx.train.teacher_feed import TeacherFeed, fetch_texts

    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    for mode, url in (("tp", sys.argv[2]), ("dp", sys.argv[3])):
        client = None
        if rank == 0:
            from gadx.teacher import TeacherClient

            client = TeacherClient(url, "m", cache_path=str(out / f"{mode}-cache.sqlite"))
        encode = lambda text: [ord(c) for c in text][:24]  # noqa: E731 - any deterministic text -> ids
        feed = TeacherFeed(batches(), remote=True, client=client, encode=encode, depth=2)
        share = slice(0, 4) if mode == "tp" else slice(rank * 4 // world, (rank + 1) * 4 // world)
        got = [feed.get([10 * s + j for j in range(4)], share) for s in range(STEPS)]
        try:
            feed.get([10 * STEPS + j for j in range(4)], share)
            error = None
        except RuntimeError as e:
            error = str(e)
        texts = fetch_texts(client, [{"messages": [{"role": "user", "content": "held out"}], "max_tokens": 8},
                                     {"reply": "given"}], remote=True)
        (out / f"{mode}-rank{rank}.json").write_text(json.dumps({"ids": got, "error": error, "texts": texts,
                                                                  "client": client is not None}))
        if client is not None:
            client.close()
        dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
