"""The token-selection function on hand-made distributions."""
import torch

from gadx.sampler.sampling import filter_top_k_top_p, sample


def test_inverse_cdf_draws_match_probabilities():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05])
    logits = probs.clamp_min(1e-30).log().expand(20000, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    tok, logp = sample(logits, temperature=1.0, top_k=0, top_p=1.0, generator=g)
    freq = torch.bincount(tok, minlength=5).float() / tok.numel()
    assert freq[1] == 0
    # 20k draws: the standard error of each frequency is below 0.004.
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    torch.testing.assert_close(logp, probs.log()[tok], atol=1e-5, rtol=0)


def test_filters_never_drawn_and_logprobs_unfiltered():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).expand(4000, -1).contiguous()
    g = torch.Generator().manual_seed(1)
    tok, logp = sample(logits, temperature=2.0, top_k=2, top_p=1.0, generator=g)
    assert set(tok.tolist()) == {0, 1}
    torch.testing.assert_close(logp, (logits / 2.0).log_softmax(-1)[0][tok])
    # softmax([3,2,1,0,-1]) = [.64,.24,.09,.03,.01]: top_p 0.8 keeps tokens 0 and 1 only.
    tok, _ = sample(logits, temperature=1.0, top_k=0, top_p=0.8, generator=g)
    assert set(tok.tolist()) == {0, 1}


def test_top_p_keeps_the_most_likely_token():
    logp = torch.tensor([[0.9, 0.05, 0.05]]).log()
    kept = filter_top_k_top_p(logp, 0, 0.1)
    assert torch.isfinite(kept).tolist() == [[True, False, False]]


def test_greedy():
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 1.0]])
    tok, logp = sample(logits, temperature=0, top_k=0, top_p=1.0, generator=None)
    assert tok.tolist() == [1, 0]
    torch.testing.assert_close(logp, logits.log_softmax(-1)[[0, 1], [1, 0]])
