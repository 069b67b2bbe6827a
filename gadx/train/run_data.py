"""The run's data: training and held-out samples, the tokenizer, and their token ids.

    data = RunData(cfg, dims, out)      # every rank; embedded: builds the synthetic world, and global rank 0
                                        # trains the tokenizer on its text into <out>/tokenizer
    data.prompt_ids(i)                  # train sample i's chat prompt (cut at stages.max_prompt_len), cached
    data.reply_ids(text)                # a teacher reply (cut at stages.max_response_len, EOS appended)

A sample's ``reply`` is None until the teacher answers (gadx.train.teacher_link fills it from a
replies file; otherwise the teacher is asked per step).
"""
from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from .config import EMBEDDED, TrainConfig
from .data import Sample, load_samples
from .sequences import encode_prompt, encode_teacher_reply


class RunData:
    def __init__(self, cfg: TrainConfig, dims, out: Path):
        self.cfg, self.dims, self.out = cfg, dims, out
        self.world = None
        self.embedded = cfg.data.train == EMBEDDED
        d = cfg.data
        if self.embedded:
            from gadx.world import World

            kw = {"n_train": d.world_train_size} if d.world_train_size else {}
            self.world = World(seed=d.world_seed, **kw)
            train = [Sample([{"role": "user", "content": ex.prompt}]) for ex in self.world.split("train")]
        else:
            train = load_samples(d.train, prompt_key=d.prompt_key, response_key=d.response_key, limit=d.max_prompts)
        held = load_samples(d.held_out, prompt_key=d.prompt_key, response_key=d.response_key) if d.held_out else None
        if held is None:  # split the held-out prompts off the end of train
            k = min(d.held_out_size, len(train) // 4)
            train, held = train[:-k], train[-k:]
        self.train, self.held = train, held
        self.num_train = len(train)
        self.tok = self._tokenizer()
        self.eos_ids = [self.tok.eos_id]
        self._prompt_cache: dict[int, list[int]] = {}
        self.truncated_prompts = 0

    def _tokenizer(self):
        from gadx.tokenizer import load_tokenizer, train_sentencepiece

        cfg = self.cfg
        path = cfg.model.tokenizer or (cfg.model.student if cfg.model.student != EMBEDDED else "")
        if path:
            return load_tokenizer(path)
        folder = self.out / "tokenizer"
        if self.dims.rank == 0 and not (folder / "tokenizer_config.json").exists():
            train_sentencepiece(self.world.corpus(), folder, cfg.model.vocab_size, chat_template=cfg.model.chat_template)
        if dist.is_initialized():
            dist.barrier()
        return load_tokenizer(folder)

    def prompt_ids(self, i: int) -> list[int]:
        if i not in self._prompt_cache:
            p = encode_prompt(self.tok, self.train[i].messages, self.cfg.stages.max_prompt_len)
            self.truncated_prompts += p.truncated
            self._prompt_cache[i] = p.ids
        return self._prompt_cache[i]

    def reply_ids(self, text: str) -> list[int]:
        return encode_teacher_reply(self.tok, text, self.cfg.stages.max_response_len)

    def held_prompt_ids(self) -> list[list[int]]:
        return [encode_prompt(self.tok, s.messages, self.cfg.stages.max_prompt_len).ids for s in self.held]
