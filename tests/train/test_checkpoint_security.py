"""Resuming never runs code from the run directory: a pickle planted in any checkpoint file
that gets unpickled (the rank RNG file, torch's ``.metadata``, megatron's ``common.pt``, the
byte objects inside ``*.distcp``) is refused with a one-line error, and its command never runs."""
import os
import pickle
import shutil

import pytest
import torch

from runs import train


class _Planted:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant_rank(ckpt, evil):
    torch.save({"rng": evil}, ckpt / "rank00000.pt")


def _plant_metadata(ckpt, evil):
    (ckpt / "dist" / ".metadata").write_bytes(pickle.dumps(evil))


def _plant_common(ckpt, evil):
    torch.save(evil, ckpt / "dist" / "common.pt")


def _plant_distcp(ckpt, evil):
    """Append a planted torch pickle to the .distcp file and point one byte object at it
    (the .metadata itself stays a clean metadata pickle)."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    md_path = ckpt / "dist" / ".metadata"
    md = pickle.loads(md_path.read_bytes())
    key = next(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    idx = next(i for i in md.storage_data if i.fqn == key)
    info = md.storage_data[idx]
    blob_path = ckpt / "dist" / info.relative_path
    import io

    buf = io.BytesIO()
    torch.save(evil, buf)
    offset = blob_path.stat().st_size
    with open(blob_path, "ab") as f:
        f.write(buf.getvalue())
    info.offset, info.length = offset, len(buf.getvalue())
    md_path.write_bytes(pickle.dumps(md))


PLANTS = {"rank_pt": _plant_rank, "metadata": _plant_metadata, "common_pt": _plant_common, "distcp_bytes": _plant_distcp}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, world_tok):
    from tiny_config import tiny_argv

    root = tmp_path_factory.mktemp("saved")
    train(root, lambda o, *e: tiny_argv(o, world_tok, *e), "run.checkpoint_every=1", "run.max_steps=2")
    return root


@pytest.mark.parametrize("where", sorted(PLANTS))
def test_planted_pickle_is_refused(tmp_path, saved_run, tiny_args, where):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    ckpt = run / "gad" / "checkpoints" / (run / "gad" / "checkpoints" / "latest").read_text().strip()
    marker = tmp_path / "pwned"
    PLANTS[where](ckpt, _Planted(marker))
    with pytest.raises(ValueError, match="refused to load") as e:
        train(run, tiny_args)
    assert not marker.exists(), f"the pickle planted in {where} ran its command"
    assert "\n" not in str(e.value), str(e.value)
