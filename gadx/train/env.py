"""The run environment: the parallel layout and the run's data, teacher and models.

    env = Env(cfg)          # every rank: init_parallel, then
    env.data                # RunData (run_data.py): samples, held-out split, tokenizer, token ids; embedded
                            #   mode builds the synthetic world and trains the tokenizer on its text
    env.models              # ModelFactory (model_factory.py): the student's ModelConfig, build / load,
                            #   the initial student, the rollout engine's weights
    env.engine              # the rollout engine (gadx.sampler), sized by rollout_batch
    env.teacher             # TeacherLink (teacher_link.py): global rank 0 alone holds the teacher client
                            #   (and serves the world's teacher on teacher.embedded_host)
    env.close()

The trainer, the evaluation and the tools use Env's own names (``env.tok``, ``env.build``,
``env.request``, ``env.prefetcher``, ...): thin delegations to the three parts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gadx.parallel import init_parallel

from .config import TrainConfig, check_divisible
from .model_factory import ModelFactory
from .run_data import RunData
from .teacher_link import TeacherLink


def rollout_batch(stages, dp: int) -> int:
    """Sequences per sampler call of a GAD / SFT step's rollout: the rows of the sampler's KV cache.

    Larger calls (the held-out D check: held-out prompts x gate_samples; an evaluation) run in
    chunks of this size (gadx.sampler.generate_in_chunks), so they no longer size the cache."""
    s = stages
    per_call = s.rollout_prompts_per_call or max(s.sft_prompts_per_step, s.prompts_per_step) // dp
    return per_call * s.n_samples


class Env:
    def __init__(self, cfg: TrainConfig):
        self._cfg = cfg
        # CPU arithmetic on denormal floats is orders of magnitude slower, and a saturated Bradley-Terry
        # loss (D's loss near 0) fills D's gradients and Adam moments with them: on SmolLM2 one implicit-D
        # update went from 20 s to 130 s over three steps. Flushing them to zero costs nothing (CPU only)
        torch.set_flush_denormal(True)
        self.dims = init_parallel(cfg.parallel.tp, cfg.parallel.pp, seed=cfg.run.seed)
        check_divisible(cfg, self.dims.dp)
        self.out = Path(cfg.run.out_dir)
        self.data = RunData(cfg, self.dims, self.out)
        self.models = ModelFactory(cfg, self.dims, self.data.tok)
        self.engine = self.models.rollout_engine(rollout_batch(cfg.stages, self.dims.dp))
        self.teacher = TeacherLink(cfg, self.dims, self.out, self.data.train + self.data.held, self.data.world)
        self._held_ids = None
        # fixed once built: the parts' objects under the names the trainer reads
        d, m = self.data, self.models
        self.world, self.embedded, self.train, self.held, self.num_train = d.world, d.embedded, d.train, d.held, d.num_train
        self.tok, self.eos_ids = d.tok, d.eos_ids
        self.model_cfg, self.from_scratch, self.sharded_rollout = m.model_cfg, m.from_scratch, m.sharded_rollout

    @property
    def cfg(self) -> TrainConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: TrainConfig) -> None:
        """A later seed's config (gadx.train.run): every part reads it from now on; the initial
        student is drawn again (it depends on run.seed)."""
        self._cfg = self.data.cfg = self.models.cfg = self.teacher.cfg = cfg
        self.models.init_state = None

    @property
    def _init_state(self):  # run.py clears it per seed (as the cfg setter now does)
        return self.models.init_state

    @_init_state.setter
    def _init_state(self, value) -> None:
        self.models.init_state = value

    # ---- models (ModelFactory) -------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.models.dtype

    def build(self, head: str = "lm", seed: int = 0):
        return self.models.build(head, seed)

    def load(self, path: str | Path, head: str = "lm"):
        return self.models.load(path, head)

    def initial_student_state(self) -> dict[str, torch.Tensor]:
        return self.models.initial_student_state()

    def engine_weights(self, model) -> dict[str, torch.Tensor]:
        return self.models.engine_weights(model)

    # ---- teacher (TeacherLink) -------------------------------------------------------------

    @property
    def client(self):
        return self.teacher.client

    @property
    def remote_teacher(self) -> bool:
        return self.teacher.remote

    def request(self, i: int) -> dict[str, Any]:
        return self.teacher.request(self.data.train[i])

    def prefetcher(self, batches):
        return self.teacher.feed(batches, encode=self.reply_ids)

    def teacher_cost(self) -> float:
        return self.teacher.cost()

    def teacher_texts(self, samples) -> list[str]:
        return self.teacher.texts(samples)

    # ---- tokens (RunData) ------------------------------------------------------------------

    @property
    def truncated_prompts(self) -> int:
        return self.data.truncated_prompts

    def prompt_ids(self, i: int) -> list[int]:
        return self.data.prompt_ids(i)

    def reply_ids(self, text: str) -> list[int]:
        return self.data.reply_ids(text)

    def heldout(self) -> tuple[list[list[int]], list[list[int]]]:
        """The held-out prompts and teacher replies as ids (collective the first time: the teacher
        may be asked)."""
        if self._held_ids is None:
            held = self.data.held
            texts = [s.reply for s in held] if all(s.reply is not None for s in held) else self.teacher_texts(held)
            self._held_ids = (self.data.held_prompt_ids(), [self.reply_ids(t) for t in texts])
        return self._held_ids

    def close(self) -> None:
        self.teacher.close()
