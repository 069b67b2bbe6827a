"""gadx export: trainer checkpoints saved at TP=2 and at TP=1 (2 GAD steps of
tests/distributed/steps_worker.py, checkpointed every step) become HF folders that transformers
loads: its logits equal gadx's for the same checkpoint, AutoTokenizer's ids equal gadx's, and
the discriminator exports with its score head."""
import json
import warnings

import pytest
import torch

import steps_worker
from launch import launch
from tiny_folders import make_folders

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # two trainer launches with checkpoints (~2 min on a loaded 2-core machine)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = make_folders(tmp_path_factory.mktemp("export"))
    args = [root / "student", root / "disc", root]
    launch(steps_worker.__file__, [*args, "1x1c"], 1)
    launch(steps_worker.__file__, [*args, "2x1c"], 2)
    return root


def _gadx_model(ckpt, name, head):
    """The checkpoint's model as gadx itself loads it (TP=1, the trainer's resharding load)."""
    from gadx.models import ModelConfig, build_model
    from gadx.parallel import init_parallel
    from gadx.parallel.dist_ckpt import EXTRA_FILE, load_sharded

    meta = json.loads((ckpt / "dist" / EXTRA_FILE).read_text())
    model = build_model(ModelConfig.from_hf_dict(meta["configs"][name]), head=head, parallel=init_parallel(1, 1))
    load_sharded(ckpt / "dist", {name: model})
    return model.eval()


def _ids(tok, world_prompts):
    return [tok.encode_chat([{"role": "user", "content": p}]) for p in world_prompts]


@pytest.mark.parametrize("layout", ["tp2pp1dp1", "tp1pp1dp1"])
def test_export_loads_in_transformers(ckpts, tmp_path, layout):
    from gadx.export import main
    from gadx.parallel import destroy_parallel
    from gadx.tokenizer import load_tokenizer
    from gadx.world import World

    run = ckpts / f"{layout}-stop2" / "gad" / "checkpoints"
    ckpt = run / "step-000002"
    assert (run / "latest").read_text().strip() == ckpt.name
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["tp"] == (2 if layout.startswith("tp2") else 1)
    assert main([str(run), str(tmp_path / "G")]) == 0  # the latest checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "G")).eval()
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "G"))
    tok = load_tokenizer(ckpts / "student")
    prompts = [ex.prompt for ex in World(seed=0).split("test_id")[:8]]
    ids = _ids(tok, prompts)
    for p, want in zip(prompts, ids):  # the exported tokenizer encodes as gadx does
        got = hf_tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
        assert list(got["input_ids"] if hasattr(got, "keys") else got) == want
        assert hf_tok.encode(p, add_special_tokens=False) == tok.encode(p)
    try:
        G = _gadx_model(ckpt, "G", "lm")
        x = torch.tensor([i[:20] for i in ids if len(i) >= 20][:4])
        with torch.no_grad():
            want = G.logits(x)
            got = hf(x).logits
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # the discriminator, with its score head
        assert main([str(ckpt), str(tmp_path / "D"), "--model", "D"]) == 0
        from gadx.models import from_pretrained

        D_ckpt = _gadx_model(ckpt, "D", "score")
        D_hf = from_pretrained(tmp_path / "D", head="score").eval()
        lengths = torch.full((x.shape[0],), x.shape[1])
        with torch.no_grad():
            torch.testing.assert_close(D_hf.score(x, lengths), D_ckpt.score(x, lengths), rtol=0, atol=0)
        assert json.loads((tmp_path / "D" / "config.json").read_text())["gadx_head"] == "score"
    finally:
        destroy_parallel()


def test_export_errors(ckpts, tmp_path, capsys):
    from gadx.export import main

    assert main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a gadx trainer checkpoint" in capsys.readouterr().err
    ckpt = ckpts / "tp1pp1dp1-stop2" / "gad" / "checkpoints"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main([str(ckpt), str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([str(ckpt), str(tmp_path / "o"), "--model", "E"]) == 2
