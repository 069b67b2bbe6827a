"""KVCacheSampler against transformers on tiny random Qwen2 / Llama checkpoints."""
import pytest
import torch

from gadx.sampler import KVCacheSampler, RolloutEngine
from tiny_models import hf_config, sampler_hf

PROMPTS = [[5, 17, 33, 9, 100, 3, 250], [42], [7, 8, 9, 10], [200, 11]]


def make_sampler(hf_model, **kw):
    s = KVCacheSampler(hf_config(hf_model), max_batch=8, max_seq_len=64, **kw)
    s.load_weights(hf_model.state_dict())
    return s


def hf_greedy(hf_model, prompt, n, eos=None):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                pad_token_id=0, eos_token_id=eos)
    return out[0, len(prompt):].tolist()


def recompute_logits(hf_model, prompt, response):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = hf_model(ids).logits[0].float()
    return logits[len(prompt) - 1: len(prompt) - 1 + len(response)]  # row j predicts response[j]


def test_implements_protocol(hf_model):
    assert isinstance(make_sampler(hf_model), RolloutEngine)


def test_greedy_matches_transformers(hf_model):
    out = make_sampler(hf_model).generate(PROMPTS, max_new_tokens=24, temperature=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        assert resp == hf_greedy(hf_model, prompt, 24)
    assert len({t for r in out.responses for t in r}) > 10  # the random model does not just repeat itself
    assert out.lengths.tolist() == [24] * len(PROMPTS) and out.finished == [False] * len(PROMPTS)


def test_eos_stops_each_row(hf_model):
    sampler = make_sampler(hf_model)
    free = sampler.generate(PROMPTS, max_new_tokens=20, temperature=0).responses
    eos = free[0][5]  # a token row 0 emits at step 5 (maybe earlier too)
    out = sampler.generate(PROMPTS, max_new_tokens=20, temperature=0, eos_ids=[eos])
    for prompt, full, resp, fin, n in zip(PROMPTS, free, out.responses, out.finished, out.lengths.tolist()):
        cut = full.index(eos) + 1 if eos in full else len(full)
        assert resp == full[:cut] and n == cut and fin == (eos in full)
        assert resp == hf_greedy(hf_model, prompt, 20, eos=eos)  # alone, transformers stops at EOS too
    assert out.finished[0] and len(out.logprobs[0]) == out.lengths[0]


def test_all_finished_stops_early():
    hf_model = sampler_hf("qwen2")
    sampler = make_sampler(hf_model)
    sampler.check_every = 2
    free = sampler.generate([PROMPTS[0]], max_new_tokens=30, temperature=0).responses[0]
    out = sampler.generate([PROMPTS[0]], max_new_tokens=30, temperature=0, eos_ids=[free[2]])
    assert out.responses[0] == free[: free.index(free[2]) + 1] and out.finished == [True]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_full_recompute(hf_model, temperature):
    out = make_sampler(hf_model).generate(PROMPTS, max_new_tokens=16, temperature=temperature, seed=3)
    for prompt, resp, lp in zip(PROMPTS, out.responses, out.logprobs):
        ref = (recompute_logits(hf_model, prompt, resp) / temperature).log_softmax(-1)
        ref = ref.gather(-1, torch.tensor(resp)[:, None]).squeeze(-1)
        assert lp.dtype == torch.float32 and lp.shape == (len(resp),)
        torch.testing.assert_close(lp, ref, atol=1e-5, rtol=1e-5)


def test_top_k_restricts_support(hf_model):
    out = make_sampler(hf_model).generate(PROMPTS, max_new_tokens=16, temperature=1.5, top_k=3, seed=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        logits = recompute_logits(hf_model, prompt, resp)
        rank = (logits > logits.gather(-1, torch.tensor(resp)[:, None])).sum(-1)
        assert rank.max() < 3


def test_top_p_restricts_support(hf_model):
    top_p, T = 0.6, 1.3
    out = make_sampler(hf_model).generate(PROMPTS, max_new_tokens=16, temperature=T, top_p=top_p, seed=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        probs = (recompute_logits(hf_model, prompt, resp) / T).softmax(-1)
        chosen = probs.gather(-1, torch.tensor(resp)[:, None])
        mass_above = (probs * (probs > chosen)).sum(-1)  # mass of strictly more likely tokens
        assert (mass_above < top_p + 1e-5).all()


def test_seeded_runs_reproduce(hf_model):
    sampler = make_sampler(hf_model)
    a = sampler.generate(PROMPTS, max_new_tokens=12, seed=7)
    b = sampler.generate(PROMPTS, max_new_tokens=12, seed=7)
    c = sampler.generate(PROMPTS, max_new_tokens=12, seed=8)
    assert a.responses == b.responses
    assert all(torch.equal(x, y) for x, y in zip(a.logprobs, b.logprobs))
    assert a.responses != c.responses


def test_batch_composition_does_not_change_greedy(hf_model):
    sampler = make_sampler(hf_model)
    together = sampler.generate(PROMPTS, max_new_tokens=10, temperature=0).responses
    alone = [sampler.generate([p], max_new_tokens=10, temperature=0).responses[0] for p in PROMPTS]
    assert together == alone


def test_weights_are_views_and_resync(hf_model):
    sd = hf_model.state_dict()
    sampler = make_sampler(hf_model)
    w = sampler.decoder.weights
    assert w.layers[0].wq.data_ptr() == sd["model.layers.0.self_attn.q_proj.weight"].data_ptr()
    before = sampler.generate(PROMPTS, max_new_tokens=8, temperature=0).responses
    new = sampler_hf(hf_model.config.model_type, seed=1)
    sampler.load_weights(new.state_dict())
    after = sampler.generate(PROMPTS, max_new_tokens=8, temperature=0).responses
    assert after != before and after[1] == hf_greedy(new, PROMPTS[1], 8)


def test_bad_input_raises(hf_model):
    cfg = hf_config(hf_model)
    sampler = KVCacheSampler(cfg, max_batch=2, max_seq_len=16)
    with pytest.raises(ValueError, match="no weights"):
        sampler.generate([[1]], max_new_tokens=2)
    sd = dict(hf_model.state_dict())
    bad = dict(sd, **{"model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"up_proj.weight: shape \(3, 3\)"):
        sampler.load_weights(bad)
    with pytest.raises(ValueError, match="missing"):
        sampler.load_weights({k: v for k, v in sd.items() if "norm" not in k})
    sampler.load_weights(sd)
    cases = [
        (dict(prompts=[]), "empty"),
        (dict(prompts=[[1], []]), "prompt 1 is empty"),
        (dict(prompts=[[1]] * 3), "max_batch=2"),
        (dict(prompts=[[1, cfg.vocab_size]]), "outside"),
        (dict(prompts=[[1] * 10], max_new_tokens=7), "max_seq_len=16"),
        (dict(prompts=[[1]], max_new_tokens=0), "max_new_tokens"),
        (dict(prompts=[[1]], top_p=0.0), "top_p"),
        (dict(prompts=[[1]], top_k=-1), "top_k"),
        (dict(prompts=[[1]], temperature=-1.0), "temperature"),
        (dict(prompts=[[1]], eos_ids=[cfg.vocab_size + 5]), "eos_ids"),
    ]
    for kw, msg in cases:
        kw = {"max_new_tokens": 2, **kw}
        with pytest.raises(ValueError, match=msg):
            sampler.generate(kw.pop("prompts"), **kw)


def test_llama31_rope_scaling_matches_transformers():
    """Llama 3.1/3.2 checkpoints scale RoPE ("llama3"): the sampler's rotary tables must follow,
    or its rollouts drift from the trained model. A scale that bites at these short lengths
    (original_max_position_embeddings=8, factor 8) makes the check sensitive."""
    hf = sampler_hf("llama", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8})
    assert hf_config(hf).rope_scaling is not None
    out = make_sampler(hf).generate(PROMPTS, max_new_tokens=16, temperature=0, seed=0)
    for prompt, resp in zip(PROMPTS, out.responses):
        assert resp == hf_greedy(hf, prompt, 16)
    logits = recompute_logits(hf, PROMPTS[0], out.responses[0])
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.responses[0])[:, None])[:, 0]
    torch.testing.assert_close(out.logprobs[0], want, atol=1e-4, rtol=1e-4)
