"""KVCacheSampler: batched rollouts for the trainer, gpt-fast style, on CPU or GPU.

    sampler = KVCacheSampler(cfg, max_batch=64, max_seq_len=512)
    sampler.load_weights(gadx.models.hf_state_dict(model))     # views, no copy
    out = sampler.generate([[1, 5, 9], [1, 7]], max_new_tokens=64, temperature=0.8,
                           eos_ids=cfg.eos_ids, seed=0)
    out.responses, out.logprobs, out.finished, out.lengths

Prompts are left-padded into one prefill, then every row decodes one token per
step at the same cache slot. Rows that hit EOS keep decoding (masked out of the
results) so the loop never waits on the host; it checks "all finished" only
every ``check_every`` steps.

Between phases of a training step the sampler holds nothing: ``release()`` drops the KV cache and
the weights (the trainer's gathered copy), as verl's sleep/wake does for its engine; the next
``load_weights`` + ``generate`` bring them back (the cache is one ``torch.empty``).
``generate_in_chunks`` (chunked.py) runs calls larger than ``max_batch`` chunk by chunk.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from gadx.models.config import ModelConfig
from gadx.sampler.decoder import Decoder, bind_weights
from gadx.sampler.engine import Rollout
from gadx.sampler.sampling import sample


class KVCacheSampler:
    """The default :class:`~gadx.sampler.RolloutEngine`."""

    def __init__(self, cfg: ModelConfig, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 max_batch: int = 64, max_seq_len: int | None = None, check_every: int = 8):
        if max_seq_len is None:
            max_seq_len = min(cfg.max_position_embeddings, 2048)
        if max_batch < 1 or max_seq_len < 2:
            raise ValueError(f"need max_batch >= 1 and max_seq_len >= 2, got {max_batch} and {max_seq_len}")
        self.cfg = cfg
        self.device, self.dtype = torch.device(device), dtype
        self.check_every = check_every
        self.decoder = self._make_decoder(max_batch, max_seq_len)

    def _make_decoder(self, max_batch: int, max_seq_len: int) -> Decoder:
        return Decoder(self.cfg, max_batch=max_batch, max_seq_len=max_seq_len, device=self.device, dtype=self.dtype)

    @property
    def max_batch(self) -> int:
        return self.decoder.max_batch

    @property
    def max_seq_len(self) -> int:
        return self.decoder.max_seq_len

    def load_weights(self, hf_state_dict: Mapping[str, torch.Tensor]) -> None:
        """Point the decoder at ``hf_state_dict`` (HF names; tensors kept by reference when dtype/device fit)."""
        self.decoder.weights = bind_weights(self.cfg, hf_state_dict, device=self.device, dtype=self.dtype)

    def release(self) -> None:
        """Free the KV cache and drop the weights until the next ``load_weights`` / ``generate``.

        On a GPU the memory goes back to torch's caching allocator (no ``empty_cache``): the training
        phases reuse it, and the next ``generate`` takes it back at the cost of one ``torch.empty``."""
        self.decoder.release()

    def _check(self, prompts, max_new_tokens, temperature, top_p, top_k, eos_ids) -> None:
        if self.decoder.weights is None:
            raise ValueError("no weights loaded: call load_weights(hf_state_dict) first")
        if not prompts:
            raise ValueError("prompts is empty")
        if len(prompts) > self.max_batch:
            raise ValueError(f"batch of {len(prompts)} prompts exceeds max_batch={self.max_batch}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        V = self.cfg.vocab_size
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
            if min(p) < 0 or max(p) >= V:
                raise ValueError(f"prompt {i} has token ids outside [0, {V}): min {min(p)}, max {max(p)}")
        longest = max(map(len, prompts))
        if longest + max_new_tokens > self.max_seq_len:
            raise ValueError(f"longest prompt {longest} + max_new_tokens {max_new_tokens} "
                             f"exceeds max_seq_len={self.max_seq_len}")
        bad = [e for e in eos_ids if not 0 <= e < V]
        if bad:
            raise ValueError(f"eos_ids {bad} outside [0, {V})")

    def _select(self, logits_BV, temperature, top_k, top_p, gen, rows=None):
        """The next token of every row and its log-prob (a TP sampler picks across vocab shards)."""
        return sample(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p, generator=gen, rows=rows)

    def _start(self, prompts, max_new_tokens, temperature, top_p, top_k, eos_ids, seed, rows):
        """Check a ``generate`` call and lay out its prompts: ``(prompts, eos_E, gen, ids_BP, plen_B, pad_B)``,
        the prompts left-padded to the longest, ``P = ids_BP.shape[1]``."""
        prompts = [list(p) for p in prompts]
        eos_ids = list(eos_ids)
        self._check(prompts, max_new_tokens, temperature, top_p, top_k, eos_ids)
        if rows is not None and not (0 <= rows[0] and rows[0] + len(prompts) <= rows[1]):
            raise ValueError(f"rows={rows} does not hold {len(prompts)} prompts")
        dev, B = self.device, len(prompts)
        plen_B = torch.tensor([len(p) for p in prompts], device=dev)
        P = max(len(p) for p in prompts)
        ids_BP = torch.zeros(B, P, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):
            ids_BP[i, P - len(p):] = torch.tensor(p)
        gen = None
        if seed is not None:
            gen = torch.Generator(device=dev)
            gen.manual_seed(seed)
        eos_E = torch.tensor(eos_ids, dtype=torch.long, device=dev)
        return prompts, eos_E, gen, ids_BP, plen_B, P - plen_B

    def _pad_bias(self, pad_B: torch.Tensor, S: int) -> torch.Tensor:
        """Additive mask ``[B, S]`` over cache slots: -inf on each row's left padding, 0 elsewhere."""
        slots_S = torch.arange(S, device=self.device)
        bias_BS = torch.zeros(pad_B.shape[0], S, device=self.device, dtype=self.dtype)
        return bias_BS.masked_fill_(slots_S[None] < pad_B[:, None], float("-inf"))

    @staticmethod
    def _finish(tokens_BN: torch.Tensor, logp_BN: torch.Tensor, steps: int, eos_E: torch.Tensor) -> Rollout:
        """Cut each row after its first EOS (or ``steps`` tokens) into a :class:`Rollout`."""
        B = tokens_BN.shape[0]
        tokens_BN, logp_BN = tokens_BN[:, :steps], logp_BN[:, :steps]
        is_eos_BN = torch.isin(tokens_BN, eos_E)
        finished_B = is_eos_BN.any(-1)
        lengths_B = torch.where(finished_B, is_eos_BN.int().argmax(-1) + 1, steps).cpu()
        tokens, lengths, logp = tokens_BN.tolist(), lengths_B.tolist(), logp_BN.cpu()
        return Rollout(
            responses=[tokens[i][: lengths[i]] for i in range(B)],
            logprobs=[logp[i, : lengths[i]].clone() for i in range(B)],
            finished=finished_B.tolist(),
            lengths=lengths_B,
        )

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, eos_ids: Sequence[int] = (), seed: int | None = None,
                 rows: tuple[int, int] | None = None) -> Rollout:
        """Sample up to ``max_new_tokens`` per prompt; ``temperature=0`` is greedy. See :class:`Rollout`.

        ``rows=(first, total)``: these prompts are rows ``[first, first + len(prompts))`` of a call of
        ``total`` prompts split into chunks (``generate_in_chunks``); each row then samples what it
        would in the unsplit call with the same ``seed``."""
        prompts, eos_E, gen, ids_BP, plen_B, pad_B = self._start(prompts, max_new_tokens, temperature, top_p, top_k,
                                                                 eos_ids, seed, rows)
        dev, (B, P), N = self.device, ids_BP.shape, max_new_tokens
        bias_BS = self._pad_bias(pad_B, self.max_seq_len)
        tokens_BN = torch.zeros(B, N, dtype=torch.long, device=dev)
        logp_BN = torch.zeros(B, N, dtype=torch.float32, device=dev)
        done_B = torch.zeros(B, dtype=torch.bool, device=dev)
        logits_BV = self.decoder.prefill(ids_BP, pad_B)
        steps = N
        for t in range(N):
            tok_B, lp_B = self._select(logits_BV, temperature, top_k, top_p, gen, rows)
            tokens_BN[:, t] = tok_B
            logp_BN[:, t] = lp_B
            done_B |= torch.isin(tok_B, eos_E)
            if t == N - 1 or ((t + 1) % self.check_every == 0 and bool(done_B.all())):
                steps = t + 1
                break
            logits_BV = self.decoder.decode(tok_B, plen_B + t, P + t, bias_BS)
        return self._finish(tokens_BN, logp_BN, steps, eos_E)
