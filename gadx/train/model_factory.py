"""The run's models: the student's shape, built or loaded at the configured dtype / TE / FP8, the
rollout engine and the weights it is given.

    models = ModelFactory(cfg, dims, tok)     # tok: the embedded student takes its vocabulary and token ids
    models.build(head="lm" | "score", seed=0) # random init; models.load(folder, head=...) from an HF folder
    models.initial_student_state()            # the student's starting weights (host copy, once per seed)
    engine = models.rollout_engine(max_batch) # KVCacheSampler (compiled or not), or TPKVCacheSampler (sharded)
    engine.load_weights(models.engine_weights(G.model))
"""
from __future__ import annotations

from pathlib import Path

import torch

from gadx.models import ModelConfig, build_model

from .config import EMBEDDED, TrainConfig, perf_config


class ModelFactory:
    def __init__(self, cfg: TrainConfig, dims, tok):
        self.cfg, self.dims, self.tok = cfg, dims, tok
        self.model_cfg = self._model_cfg()
        self.model_cfg.check_parallel(dims.tp)
        self.from_scratch = cfg.discriminator.from_scratch if cfg.discriminator.from_scratch is not None \
            else cfg.model.student == EMBEDDED
        self.sharded_rollout = cfg.parallel.rollout == "sharded" and dims.tp > 1
        self.init_state = None  # initial_student_state's cache (cleared when the run's config changes)

    def _model_cfg(self) -> ModelConfig:
        m = self.cfg.model
        if m.student != EMBEDDED:
            return ModelConfig.from_pretrained(m.student)
        return ModelConfig(
            family="qwen2", vocab_size=self.tok.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
            num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, head_dim=m.hidden_size // m.num_heads,
            rope_theta=10000.0, tie_embeddings=True, qkv_bias=True,
            max_position_embeddings=self.cfg.stages.max_prompt_len + self.cfg.stages.max_response_len,
            bos_token_id=self.tok.bos_id, eos_token_id=self.tok.eos_id, pad_token_id=self.tok.pad_id,
        )

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.cfg.model.dtype)

    def build(self, head: str = "lm", seed: int = 0):
        """A randomly initialised student-shaped model at the configured dtype / TE / FP8."""
        m = self.cfg.model
        return build_model(self.model_cfg, head=head, parallel=self.dims, seed=seed, dtype=self.dtype,
                           use_te=m.use_te, fp8=m.fp8 or None, perf=perf_config(self.cfg))

    def load(self, path: str | Path, head: str = "lm"):
        """A model loaded from an HF folder at the configured dtype / TE / FP8."""
        from gadx.models import from_pretrained

        m = self.cfg.model
        return from_pretrained(path, head=head, parallel=self.dims, dtype=self.dtype, use_te=m.use_te, fp8=m.fp8 or None,
                               perf=perf_config(self.cfg))

    def initial_student_state(self) -> dict[str, torch.Tensor]:
        """The student's starting weights (same for every run of a seed): a folder's, or a seeded random init."""
        if self.init_state is None:
            if self.cfg.model.student == EMBEDDED:
                torch.manual_seed(self.cfg.run.seed)
                model = self.build(seed=self.cfg.run.seed)
            else:
                model = self.load(self.cfg.model.student)
            # kept on the host: it is read once per seed (the "before" row, a fresh student), and on
            # a GPU a device copy would hold a student's worth of memory for the whole run
            self.init_state = {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v
                               for k, v in model.state_dict().items()}
        return self.init_state

    def rollout_engine(self, max_batch: int):
        """The rollout engine (gadx.sampler), ``max_batch`` rows of KV cache, prompt + reply long."""
        s, dims = self.cfg.stages, self.dims
        if self.sharded_rollout:
            from gadx.sampler import TPKVCacheSampler

            return TPKVCacheSampler(self.model_cfg, tp_group=dims.tp_group, device=dims.device, dtype=self.dtype,
                                    max_batch=max_batch, max_seq_len=s.max_prompt_len + s.max_response_len)
        from gadx.sampler.compiled import make_sampler

        return make_sampler(self.model_cfg, compile=self.cfg.parallel.rollout_compile, device=dims.device,
                            dtype=self.dtype, max_batch=max_batch, max_seq_len=s.max_prompt_len + s.max_response_len)

    def engine_weights(self, model) -> dict[str, torch.Tensor]:
        """The student's weights as the rollout engine takes them: this rank's TP shard (sharded
        rollouts, no communication) or the whole model (gathered over TP and PP)."""
        from gadx.parallel import gather_hf_state_dict
        from gadx.sampler import local_hf_state_dict

        return local_hf_state_dict(model) if self.sharded_rollout else gather_hf_state_dict(model)
