"""TP=2 and PP=2 (gloo, spawned processes) give the TP=1 logits, the same DDP +
distributed-optimizer training steps and the same saved checkpoint, from one HF checkpoint.

The worker (layout_worker.py) runs both 2-process layouts in one launch; TP2xPP2 (4
processes) is marked slow.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import layout_worker

WORKER = Path(layout_worker.__file__)


def tiny_checkpoint(folder):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # odd vocab (padded at TP=2), GQA, QKV bias, tied embeddings (shared across stages at PP=2)
    cfg = Qwen2Config(vocab_size=517, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)


def launch(ckpt, out, world, layouts):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(ckpt), str(out), *layouts], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=400)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    tiny_checkpoint(root / "ckpt")
    (root / "tp1pp1").mkdir()
    ref = layout_worker.run(str(root / "ckpt"), 1, 1, str(root / "tp1pp1"))
    return root, ref


def check_layout(root, ref, tp, pp):
    from safetensors.torch import load_file

    got = torch.load(root / f"tp{tp}pp{pp}" / "result.pt")
    torch.testing.assert_close(got["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
    assert got["logits"].shape[-1] == 517
    torch.testing.assert_close(got["scores"], ref["scores"], rtol=1e-5, atol=1e-5)
    # two optimizer steps later the models still agree, and the steps did something
    torch.testing.assert_close(got["logits_after"], ref["logits_after"], rtol=1e-4, atol=1e-4)
    assert (ref["logits_after"] - ref["logits"]).abs().max() > 1e-2
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(ref["losses"]), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(got["grad_norms"]), torch.tensor(ref["grad_norms"]), rtol=1e-5, atol=0)
    want = load_file(root / "tp1pp1" / "saved" / "model.safetensors")
    saved = root / f"tp{tp}pp{pp}" / "saved"
    have = {}
    for f in saved.glob("*.safetensors"):
        part = load_file(f)
        assert not set(part) & set(have), f"tensors saved twice: {set(part) & set(have)}"
        have.update(part)
    assert sorted(have) == sorted(want)
    for k in want:
        torch.testing.assert_close(have[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    if pp > 1:  # one shard file per stage + index: transformers must read it as one model
        from transformers import AutoModelForCausalLM

        hf_sd = AutoModelForCausalLM.from_pretrained(saved).state_dict()
        for k in want:
            torch.testing.assert_close(hf_sd[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


def test_tp1_training_step_moves_loss(reference):
    from gadx.models import from_pretrained

    root, ref = reference
    assert ref["losses"][1][0] < ref["losses"][0][0]
    assert all(n > 0 for n in ref["grad_norms"])
    # the schedule's forward-only scores are the model's own score()
    disc = from_pretrained(root / "ckpt", head="score", seed=7)
    ids_BT = layout_worker.batches(517)[0]
    with torch.no_grad():
        direct = disc.score(ids_BT, torch.tensor([layout_worker.T, layout_worker.T // 2]))
    torch.testing.assert_close(ref["scores"][0], direct, rtol=1e-5, atol=1e-6)


def test_tp2_and_pp2_match_tp1(reference):
    root, ref = reference
    launch(root / "ckpt", root, 2, ["2x1", "1x2"])
    check_layout(root, ref, 2, 1)
    check_layout(root, ref, 1, 2)


@pytest.mark.slow
def test_tp2xpp2_matches_tp1(reference):
    root, ref = reference
    launch(root / "ckpt", root, 4, ["2x2"])
    check_layout(root, ref, 2, 2)
