"""The oracle of a real run: a teacher whose weights you hold, as the ceiling reward.

    oracle = LMOracle(teacher_dir, student_tok)    # ValueError unless it shares the student's tokenizer
    r_S = oracle.reward(prompt_ids_S, responses_S)  # mean log T(token) over each reply (EOS counted)

The black-box setting never has this: it is the diagnostic ceiling arm of a real run
(``stages.gad.reward = "oracle"`` with ``stages.gad.oracle_model`` set). GRPO on it optimises
exactly the judge-free evaluation's score (gadx.real.evaluate: the teacher's log-likelihood
per token, EOS counted when the reply finished), so no discriminator's reward can beat it there.

Unlike the embedded world's exact ``Oracle`` an LM cannot say a reply is impossible, and a reply
cut at ``max_response_len`` is scored on the tokens it has: the evaluation reads it the same way.
It gives no acc* (``exact = False``): the trainer's ceiling diagnostics stay embedded-only.
"""
from __future__ import annotations

from pathlib import Path

import torch

PROBE = [{"role": "user", "content": "Name three colours, then stop.\nÀ bientôt 123."}]


@torch.no_grad()
def mean_logprobs(model, seqs: list[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int = 8,
                  device: str | torch.device = "cpu") -> list[float]:
    """Per-reply mean log-probability (nats) of each (prompt_ids, reply_ids) under ``model`` (a
    gadx.models GadxModel with an LM head); sequences batched by length, right-padded."""
    from gadx.kernels import token_logprobs

    for i, (p, r) in enumerate(seqs):
        if not p or not r:
            raise ValueError(f"sequence {i}: empty prompt ({len(p)} tokens) or reply ({len(r)} tokens)")
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    W = model.head_weight
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        T = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
        ids_BT = torch.full((len(idx), T), pad_id, dtype=torch.long)  # right padding: causal, harmless
        for row, i in enumerate(idx):
            full = seqs[i][0] + seqs[i][1]
            ids_BT[row, :len(full)] = torch.tensor(full)
        hidden_BTH = model.hidden(ids_BT.to(device))
        for row, i in enumerate(idx):
            P, L = len(seqs[i][0]), len(seqs[i][1])
            # position t predicts token t + 1: the reply's tokens are predicted from P - 1 .. P + L - 2
            logp_L = token_logprobs(hidden_BTH[row, P - 1:P + L - 1].contiguous(), W,
                                    ids_BT[row, P:P + L].contiguous().to(device))
            out[i] = float(logp_L.float().mean())
    return out


def check_same_tokenizer(a, b) -> None:
    """ValueError unless tokenizers ``a`` and ``b`` give the same ids (the oracle reads the
    student's token ids as its own): vocabulary size, EOS, a chat prompt and plain text."""
    probe_a = (a.vocab_size, a.eos_id, a.encode_chat(PROBE, add_generation_prompt=True), a.encode(PROBE[0]["content"]))
    probe_b = (b.vocab_size, b.eos_id, b.encode_chat(PROBE, add_generation_prompt=True), b.encode(PROBE[0]["content"]))
    if probe_a != probe_b:
        raise ValueError(f"the oracle's tokenizer {b!r} does not encode like the student's {a!r}: the oracle "
                         "reward reads the student's token ids, so both must share one tokenizer")


class LMOracle:
    exact = False  # no impossible replies, hence no acc*: gadx.train.oracle's diagnostics need the embedded world

    def __init__(self, folder: str | Path, student_tok, *, batch_size: int = 8, device: str | torch.device = "cpu"):
        from gadx.models import from_pretrained
        from gadx.tokenizer import load_tokenizer

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(f"stages.gad.oracle_model={str(folder)!r}: not an HF model folder (no config.json)")
        tok = load_tokenizer(folder)
        check_same_tokenizer(student_tok, tok)
        self.pad_id, self.batch_size, self.device = tok.eos_id, batch_size, device
        self.model = from_pretrained(folder, dtype=torch.float32).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def reward(self, prompt_ids, responses) -> torch.Tensor:
        """Mean log T per reply token (EOS counted when the reply has it), float32 on the CPU."""
        seqs = [([int(t) for t in p], [int(t) for t in r]) for p, r in zip(prompt_ids, responses, strict=True)]
        return torch.tensor(mean_logprobs(self.model, seqs, pad_id=self.pad_id, batch_size=self.batch_size,
                                          device=self.device), dtype=torch.float32)
