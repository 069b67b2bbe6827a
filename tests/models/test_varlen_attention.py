"""Packed THD attention (gadx.models.varlen, no mask) against the dense block-diagonal mask it
replaced: the kernel alone, the whole model (logits, scores, gradients), no leaks between
documents, and TP=2 / PP=2 through megatron's schedule (varlen_worker.py, 2 gloo ranks)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dense_reference import dense_hidden, dense_mask

# documents of different lengths, with runs of equal ones (batched into one SDPA call) and a 1-token one
LENS = [5, 9, 9, 3, 1, 7, 7, 7, 4]


def _qkv(T, hq=4, hkv=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(T, h, d, generator=g, requires_grad=True) for h in (hq, hkv, hkv)]


def _dense_attention(q_THD, k_THD, v_THD, doc_ids_T):
    blocked = dense_mask(doc_ids_T[None])  # [1,1,T,T]
    o = F.scaled_dot_product_attention(q_THD.transpose(0, 1)[None], k_THD.transpose(0, 1)[None],
                                       v_THD.transpose(0, 1)[None], attn_mask=~blocked, enable_gqa=True)
    return o[0].transpose(0, 1).reshape(q_THD.shape[0], -1)


def _doc_ids(lens):
    return torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])


def test_kernel_matches_dense_mask_values_and_grads():
    from gadx.models.varlen import varlen_attention, varlen_params

    T = sum(LENS)
    q, k, v = _qkv(T)
    out = varlen_attention(q, k, v, varlen_params(LENS))
    ref = _dense_attention(q, k, v, _doc_ids(LENS))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(out)
    g_out = torch.autograd.grad((out * w).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backend_on_cpu_is_per_document():
    from gadx.models.varlen import PER_DOC, backend

    assert backend("cpu", torch.bfloat16) == backend("cpu", torch.float32) == PER_DOC


def test_kernel_plain_megatron_params_and_bad_lengths():
    from megatron.core.packed_seq_params import PackedSeqParams

    from gadx.models.varlen import varlen_attention, varlen_params

    T = sum(LENS)
    q, k, v = _qkv(T)
    p = varlen_params(LENS)
    plain = PackedSeqParams(qkv_format="thd", cu_seqlens_q=p.cu_seqlens_q, cu_seqlens_kv=p.cu_seqlens_kv,
                            max_seqlen_q=p.max_seqlen_q, max_seqlen_kv=p.max_seqlen_kv)
    torch.testing.assert_close(varlen_attention(q, k, v, plain), varlen_attention(q, k, v, p))
    assert p.cu_seqlens_q.dtype == torch.int32 and p.cu_seqlens_q.tolist()[-1] == T and p.max_seqlen_q == 9
    with pytest.raises(ValueError, match="at least one token"):
        varlen_params([3, 0, 2])
    with pytest.raises(AssertionError, match="cover"):
        varlen_attention(q, k, v, varlen_params(LENS[:-1]))


def test_kernel_documents_do_not_leak():
    """Outputs of a document depend on its own q/k/v only: exact zeros in the cross gradients,
    and changing another document's keys and values changes nothing."""
    from gadx.models.varlen import varlen_attention, varlen_params

    T, p = sum(LENS), varlen_params(LENS)
    q, k, v = _qkv(T)
    starts = [sum(LENS[:i]) for i in range(len(LENS))]
    for d in (2, 7):  # a document inside a run of equal lengths and one after
        s, e = starts[d], starts[d] + LENS[d]
        out = varlen_attention(q, k, v, p)
        gq, gk, gv = torch.autograd.grad(out[s:e].sum(), (q, k, v))
        for g in (gq, gk, gv):
            assert g[s:e].abs().sum() > 0
            assert g[:s].abs().max() == 0 and g[e:].abs().max() == 0
    with torch.no_grad():
        k2, v2 = k.clone(), v.clone()
        k2[: starts[2]] += 1.0
        v2[: starts[2]] -= 1.0
        a, b = varlen_attention(q, k, v, p), varlen_attention(q, k2, v2, p)
    assert torch.equal(a[starts[2]:], b[starts[2]:]) and not torch.equal(a[: starts[2]], b[: starts[2]])


@pytest.fixture(scope="module")
def models():
    from gadx.models import build_model
    from gadx.parallel import init_parallel
    from tiny_models import model_config

    init_parallel()
    cfg = model_config()
    return build_model(cfg, seed=1), build_model(cfg, head="score", seed=2)


def _packed_batch(pad_to=0):
    from gadx.train.packing import pack

    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (2, 4, 4, 1, 3, 3)]
    responses = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (3, 5, 5, 2, 4, 6)]
    (mb,) = pack(prompts, responses, budget=64, pad_to=pad_to)
    return mb


def _loss_and_grads(model, hidden_1TH, mb):
    logits_TV = model.logits_from_hidden(hidden_1TH)[0]
    loss = (F.cross_entropy(logits_TV, mb.targets_T, reduction="none") * mb.mask_T).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return logits_TV.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("pad_to", [0, 64])
def test_model_logits_and_grads_match_dense(models, pad_to):
    student, _ = models
    mb = _packed_batch(pad_to)
    assert mb.packed.doc_lens[-1] == (pad_to - 42 if pad_to else 9)  # the padding is a document of its own
    new_logits, new_grads = _loss_and_grads(
        student, student.hidden(mb.input_ids_1T, mb.position_ids_1T, packed_seq_params=mb.packed), mb)
    ref_logits, ref_grads = _loss_and_grads(
        student, dense_hidden(student, mb.input_ids_1T, mb.position_ids_1T, mb.doc_ids_1T), mb)
    torch.testing.assert_close(new_logits, ref_logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(new_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the convenience paths build the same params: doc ids, and default positions from the lengths
    torch.testing.assert_close(student.hidden(mb.input_ids_1T, doc_ids_BT=mb.doc_ids_1T)[0],
                               student.hidden(mb.input_ids_1T, packed_seq_params=mb.packed)[0])


def test_discriminator_scores_match_dense(models):
    _, disc = models
    mb = _packed_batch()
    with torch.no_grad():
        new = disc.score_hidden(disc.hidden(mb.input_ids_1T, mb.position_ids_1T, packed_seq_params=mb.packed)[0][mb.last_idx_N])
        ref = disc.score_hidden(dense_hidden(disc, mb.input_ids_1T, mb.position_ids_1T, mb.doc_ids_1T)[0][mb.last_idx_N])
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)


def test_model_documents_do_not_leak(models):
    student, _ = models
    mb = _packed_batch()
    starts = [0]
    for n in mb.packed.doc_lens:
        starts.append(starts[-1] + n)
    ids2 = mb.input_ids_1T.clone()
    ids2[0, starts[1] : starts[2]] = (ids2[0, starts[1] : starts[2]] + 1) % 97  # rewrite document 1
    with torch.no_grad():
        a = student.hidden(mb.input_ids_1T, mb.position_ids_1T, packed_seq_params=mb.packed)[0]
        b = student.hidden(ids2, mb.position_ids_1T, packed_seq_params=mb.packed)[0]
    assert not torch.allclose(a[starts[1] : starts[2]], b[starts[1] : starts[2]])
    torch.testing.assert_close(a[: starts[1]], b[: starts[1]], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[starts[2] :], b[starts[2] :], rtol=0, atol=1e-6)


def test_packed_input_errors(models):
    student, _ = models
    mb = _packed_batch()
    with pytest.raises(ValueError, match="batch 1"):
        student.hidden(mb.input_ids_1T.expand(2, -1), packed_seq_params=mb.packed)
    with pytest.raises(ValueError, match="not both"):
        student.hidden(mb.input_ids_1T, doc_ids_BT=mb.doc_ids_1T, packed_seq_params=mb.packed)


def test_tp2_and_pp2_match_dense():
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
    from launch import launch

    logs = launch(Path(__file__).with_name("varlen_worker.py"), ["2x1", "1x2"], 2, timeout=600)
    for layout in ("2x1", "1x2"):
        assert any(f"OK {layout}" in log for log in logs), logs[0][-3000:]
