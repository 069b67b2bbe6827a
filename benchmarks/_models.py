"""Tiny random checkpoints shared by the benchmarks (built locally, nothing from a hub).

    folder = build_tiny_qwen2(tmp_path / "qwen2")       # HF folder: config.json, model.safetensors, tokenizer
    prompts = random_prompts(8, 32, vocab_size=1024)    # token-id lists; prompt_text(p) is their text

The tokenizer is a word-level one whose token ``i`` is the word ``w{i}`` (0-2 are
<pad>, <s>, </s>), so a prompt of ``n`` ids is exactly ``n`` tokens on every side:
gadx reads the ids, transformers/TRL read the text and get the same ids back.
"""
from __future__ import annotations

import random
from pathlib import Path

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<s>", "</s>"]

# A Qwen2-shaped model small enough for a 2-core CPU; big enough that matmuls, not Python, dominate.
TINY_QWEN2 = dict(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)


def word(i: int) -> str:
    return SPECIALS[i] if i < len(SPECIALS) else f"w{i}"


def build_tokenizer(vocab_size: int):
    """A transformers fast tokenizer over the words w3..w{V-1} (whitespace-split, no added specials).

    Load it back with ``load_tokenizer(folder)``: AutoTokenizer maps a qwen2 config to Qwen2's BPE class."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({word(i): i for i in range(vocab_size)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<pad>", padding_side="left")


def load_tokenizer(folder: str | Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def build_tiny_qwen2(folder: str | Path, *, seed: int = 0, max_position_embeddings: int = 512, **overrides) -> Path:
    """Save a random Qwen2ForCausalLM (TINY_QWEN2 + overrides) and its tokenizer to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    kw = {**TINY_QWEN2, **overrides}
    torch.manual_seed(seed)
    config = Qwen2Config(**kw, max_position_embeddings=max_position_embeddings, bos_token_id=BOS, eos_token_id=EOS,
                         pad_token_id=PAD)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.pad_token_id = PAD
    model.save_pretrained(folder)
    build_tokenizer(kw["vocab_size"]).save_pretrained(folder)
    return folder


def random_prompts(n: int, length: int, *, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of exactly ``length`` ordinary (non-special) token ids."""
    rng = random.Random(seed)
    return [[rng.randrange(len(SPECIALS), vocab_size) for _ in range(length)] for _ in range(n)]


def prompt_text(ids: list[int]) -> str:
    return " ".join(word(i) for i in ids)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's current resident set size."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_json_scripts(cmds: dict[str, list[str]], *, timeout: float = 3600) -> dict[str, dict]:
    """Run each command (a script printing one JSON line last) in its own process, one after the
    other (never at once: two sides sharing the cores would time each other); the parsed lines.

    Each side gets its own process (its own peak RSS, its own torch threads)."""
    import json
    import subprocess

    results = {}
    for name, cmd in cmds.items():
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results
