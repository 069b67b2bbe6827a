"""Layout-changing checkpoints (megatron dist_checkpointing) and gather_hf_state_dict.

A TP1PP1 checkpoint of a student (fp32) and a discriminator (bf16 backbone, fp32 head) is
loaded into randomly initialised models at TP2 and PP2 (one 2-process launch; TP2xPP2 is a
4-process launch, marked slow), which must then hold exactly the TP1 weights (gathered back
to HF names on every rank) and give the TP1 logits through megatron's schedule; what they
save at their layout must load back at TP1 to exactly the original weights. Adam state
saved at TP1 after one step resumes bit-identically at TP1, within float tolerance of TP1's
next step at TP2 / PP2 / TP2xPP2, and, saved again there, bit-identically back at TP1.
"""
from pathlib import Path

import pytest
import torch

import ckpt_worker
from launch import launch

WORKER = Path(ckpt_worker.__file__)


def tiny_checkpoint(folder):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # odd vocab (padded to 518 at TP=2), GQA, QKV bias, tied embeddings (shared across stages at PP=2)
    cfg = Qwen2Config(vocab_size=517, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)


def assert_same_weights(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: keys differ: {set(got) ^ set(want)}"
    for k in want:
        assert got[k].dtype == want[k].dtype, f"{what}: {k} dtype {got[k].dtype} != {want[k].dtype}"
        assert torch.equal(got[k], want[k]), f"{what}: {k} differs by {(got[k].float() - want[k].float()).abs().max()}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from gadx.models import from_pretrained, hf_state_dict
    from gadx.parallel import init_parallel, save_sharded

    root = tmp_path_factory.mktemp("dist_ckpt")
    tiny_checkpoint(root / "hf")
    init_parallel(1, 1)
    g = from_pretrained(root / "hf")
    d = from_pretrained(root / "hf", head="score", dtype=torch.bfloat16, seed=7)
    save_sharded(root / "ref", {"student": g, "discriminator": d}, extra={"step": 3})
    with torch.no_grad():
        logits = g.logits(ckpt_worker.batch(517))
    want = {"student": {k: v.clone() for k, v in hf_state_dict(g).items()},
            "discriminator": {k: v.clone() for k, v in hf_state_dict(d).items()}}
    return root, want, logits


_OPT_REF = {}


def optimizer_reference(root):
    """At TP1: one Adam step, save weights + optimizer state (OPT), then the uninterrupted
    second step. Returns (OPT folder, weights at the save, weights and grad norm after step 2)."""
    from gadx.models import from_pretrained, hf_state_dict
    from gadx.parallel import save_sharded

    if root not in _OPT_REF:
        ids_BT = ckpt_worker.batch(517)
        chunks, opt = ckpt_worker.player(from_pretrained(root / "hf"))
        ckpt_worker.train_step(chunks, opt, ids_BT)
        save_sharded(root / "opt_ref", {"student": chunks[0]}, optimizers={"student": opt})
        saved = {k: v.clone() for k, v in hf_state_dict(chunks[0].module).items()}
        norm = ckpt_worker.train_step(chunks, opt, ids_BT)
        _OPT_REF[root] = (root / "opt_ref", saved, hf_state_dict(chunks[0].module), norm)
    return _OPT_REF[root]


def load_at_tp1(root, ckpt):
    from gadx.models import ModelConfig, hf_state_dict
    from gadx.parallel import current_parallel, load_sharded

    cfg = ModelConfig.from_pretrained(root / "hf")
    g, d = ckpt_worker.build_pair(cfg, current_parallel())
    extra = load_sharded(ckpt, {"student": g, "discriminator": d})
    return g, {"student": hf_state_dict(g), "discriminator": hf_state_dict(d)}, extra


def test_tp1_round_trip(reference):
    root, want, logits = reference
    g, got, extra = load_at_tp1(root, root / "ref")
    assert extra == {"step": 3}
    for name in want:
        assert_same_weights(got[name], want[name], name)
    with torch.no_grad():
        torch.testing.assert_close(g.logits(ckpt_worker.batch(517)), logits, rtol=0, atol=0)


def test_bad_checkpoints(reference, tmp_path):
    from gadx.models import ModelConfig, build_model
    from gadx.parallel import load_sharded, save_sharded

    root, _, _ = reference
    cfg = ModelConfig.from_pretrained(root / "hf")
    with pytest.raises(ValueError, match="not a gadx sharded checkpoint"):
        load_sharded(tmp_path, {"student": build_model(cfg)})
    with pytest.raises(ValueError, match="another config"):
        load_sharded(root / "ref", {"student": build_model(cfg.__class__(**{**cfg.__dict__, "intermediate_size": 128}))})
    with pytest.raises(ValueError, match="asked for"):
        load_sharded(root / "ref", {"teacher": build_model(cfg)})
    (tmp_path / "junk").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        save_sharded(tmp_path, {"student": build_model(cfg)})


def check_layout(root, want, logits, tp, pp):
    out = root / f"tp{tp}pp{pp}"
    files = sorted(out.glob("gathered_rank*.pt"))
    assert len(files) == tp * pp
    for f in files:
        got = torch.load(f)
        for name in want:
            assert_same_weights(got["all"][name], want[name], f"{f.name} {name} (all)")
            if got["pp_rank"] == 0:
                assert_same_weights(got["first_stage"][name], want[name], f"{f.name} {name} (first_stage)")
            else:
                assert got["first_stage"][name] == {}
    torch.testing.assert_close(torch.load(out / "logits.pt"), logits, rtol=1e-5, atol=1e-5)
    g, back, extra = load_at_tp1(root, out / "ckpt")
    assert extra == {"step": 3}
    for name in want:
        assert_same_weights(back[name], want[name], f"tp{tp}pp{pp} -> tp1pp1 {name}")


def check_optimizer_layout(root, tp, pp):
    """Adam state saved at TP1 resumes at TPxPP: the next step there gives TP1's weights and grad
    norm (float tolerance: the layouts differ in reduction order), and the state saved again at
    TPxPP resumes at TP1 bit-identically."""
    from gadx.models import ModelConfig, build_model, hf_state_dict
    from gadx.parallel import load_sharded

    ckpt, _, want, want_norm = optimizer_reference(root)
    out = root / f"tp{tp}pp{pp}"
    files = sorted(out.glob("opt_step_rank*.pt"))
    assert len(files) == tp * pp
    for f in files:
        got = torch.load(f)
        assert abs(got["grad_norm"] - want_norm) <= 1e-5 * want_norm, (f.name, got["grad_norm"], want_norm)
        assert sorted(got["weights"]) == sorted(want)
        for k in want:
            torch.testing.assert_close(got["weights"][k], want[k], rtol=1e-5, atol=1e-6, msg=f"{f.name} {k}")
    chunks, opt = ckpt_worker.player(build_model(ModelConfig.from_pretrained(root / "hf"), seed=5))
    load_sharded(out / "opt_ckpt", {"student": chunks[0]}, optimizers={"student": opt})
    assert ckpt_worker.train_step(chunks, opt, ckpt_worker.batch(517)) == want_norm
    assert_same_weights(hf_state_dict(chunks[0].module), want, f"tp{tp}pp{pp} -> tp1pp1 optimizer state")


def test_tp2_and_pp2_from_tp1_and_back(reference):
    root, want, logits = reference
    ckpt = optimizer_reference(root)[0]
    launch(WORKER, ["--opt", ckpt, root / "ref", root, "2x1", "1x2"], 2)
    for tp, pp in ((2, 1), (1, 2)):
        check_layout(root, want, logits, tp, pp)
        check_optimizer_layout(root, tp, pp)


@pytest.mark.slow
def test_tp2xpp2_from_tp1_and_back(reference):
    root, want, logits = reference
    launch(WORKER, ["--opt", optimizer_reference(root)[0], root / "ref", root, "2x2"], 4)
    check_layout(root, want, logits, 2, 2)
    check_optimizer_layout(root, 2, 2)


def test_optimizer_state_round_trip(reference, tmp_path):
    """Saved after one Adam step and loaded into a fresh model + optimizer, the next step is
    bit-identical to the uninterrupted run's (Adam moments and step count restored)."""
    from gadx.models import ModelConfig, build_model, hf_state_dict
    from gadx.parallel import load_sharded

    root, _, _ = reference
    ckpt, saved, want, want_norm = optimizer_reference(root)
    chunks2, opt2 = ckpt_worker.player(build_model(ModelConfig.from_pretrained(root / "hf"), seed=5))
    load_sharded(ckpt, {"student": chunks2[0]}, optimizers={"student": opt2})
    got_norm = ckpt_worker.train_step(chunks2, opt2, ckpt_worker.batch(517))
    assert got_norm == want_norm
    assert_same_weights(hf_state_dict(chunks2[0].module), want, "after the resumed step")

    with pytest.raises(ValueError, match="holds optimizer state for"):
        load_sharded(root / "ref", {"student": chunks2[0]}, optimizers={"student": opt2})
    # the weights alone load from a checkpoint that also holds optimizer state
    bare = build_model(ModelConfig.from_pretrained(root / "hf"), seed=6)
    load_sharded(ckpt, {"student": bare})
    assert_same_weights(hf_state_dict(bare), saved, "weights alone")


def test_bf16_optimizer_state_round_trip(reference, tmp_path):
    """bf16 weights with fp32 norms (two grad buffers, fp32 main copies of the bf16 weights): the
    resumed step is bit-identical too. megatron pairs each parameter with its main copy by an
    index that, with mixed dtypes, pointed at another parameter's (gadx/parallel/dist_ckpt.py)."""
    from gadx.models import ModelConfig, build_model, from_pretrained, hf_state_dict
    from gadx.parallel import load_sharded, save_sharded

    root, _, _ = reference
    ids_BT = ckpt_worker.batch(517)
    chunks, opt = ckpt_worker.player(from_pretrained(root / "hf", dtype=torch.bfloat16))
    assert {p.dtype for p in chunks[0].module.parameters()} == {torch.bfloat16, torch.float32}
    ckpt_worker.train_step(chunks, opt, ids_BT)
    save_sharded(tmp_path / "ck", {"student": chunks[0]}, optimizers={"student": opt})
    want_norm = ckpt_worker.train_step(chunks, opt, ids_BT)
    want = hf_state_dict(chunks[0].module)

    cfg = ModelConfig.from_pretrained(root / "hf")
    chunks2, opt2 = ckpt_worker.player(build_model(cfg, dtype=torch.bfloat16, seed=5))
    load_sharded(tmp_path / "ck", {"student": chunks2[0]}, optimizers={"student": opt2})
    assert ckpt_worker.train_step(chunks2, opt2, ids_BT) == want_norm
    assert_same_weights(hf_state_dict(chunks2[0].module), want, "bf16, after the resumed step")
