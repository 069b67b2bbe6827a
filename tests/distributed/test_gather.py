"""The one full-state gather (gadx.parallel.gather_hf_state_dict) equals the trainer's old
pickle-based gather at TP=2 and PP=2 (one 2-process launch; TP2xPP2, 4 processes, is slow):
on the device, on the host (copies, not views), to every stage or to the first stage only,
for an fp32 student with tied embeddings and a bf16 discriminator with an fp32 head."""
from pathlib import Path

import pytest
import torch

import gather_worker
from launch import launch

WORKER = Path(gather_worker.__file__)


def _check(out: Path, tp: int, pp: int) -> None:
    from gadx.sampler.decoder import expected_shapes

    student = sorted(expected_shapes(gather_worker.tiny_config()))
    for rank in range(tp * pp):
        seen = torch.load(out / f"tp{tp}pp{pp}" / f"rank{rank}.pt")
        assert seen["student"] == student, f"tp{tp}pp{pp} rank {rank}: not the whole student"
        assert set(seen["discriminator"]) == (set(student) - {"lm_head.weight"}) | {"score.weight", "score.bias"}


def test_gather_tp2_and_pp2_equals_the_old_gather(tmp_path):
    launch(WORKER, [tmp_path, "2x1", "1x2"], 2)
    for tp, pp in ((2, 1), (1, 2)):
        _check(tmp_path, tp, pp)


@pytest.mark.slow
def test_gather_tp2xpp2_equals_the_old_gather(tmp_path):
    launch(WORKER, [tmp_path, "2x2"], 4)
    _check(tmp_path, 2, 2)
