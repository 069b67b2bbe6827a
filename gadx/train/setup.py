"""The run environment: parallel state, tokenizer, student config, rollout engine, data and teacher.

    env = Env(cfg)             # every rank; embedded mode builds the synthetic world and trains the
                                # tokenizer on its text; global rank 0 alone serves the world's teacher
                                # (on teacher.embedded_host) and holds the teacher client
    env.close()

The trainer sees the teacher only through ``TeacherClient`` (HTTP, cached on
disk) or a pre-collected replies file: in embedded mode too, the world's
teacher is a black box behind ``gadx.serve``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gadx.models import ModelConfig, build_model
from gadx.parallel import init_parallel

from .config import EMBEDDED, TrainConfig, check_divisible, perf_config
from .data import Sample, load_samples
from .sequences import encode_prompt, encode_teacher_reply


def _bcast(obj: Any) -> Any:
    box = [obj]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def rollout_batch(stages, dp: int) -> int:
    """Sequences per sampler call of a GAD / SFT step's rollout: the rows of the sampler's KV cache.

    Larger calls (the held-out D check: held-out prompts x gate_samples; an evaluation) run in
    chunks of this size (gadx.sampler.generate_in_chunks), so they no longer size the cache."""
    s = stages
    per_call = s.rollout_prompts_per_call or max(s.sft_prompts_per_step, s.prompts_per_step) // dp
    return per_call * s.n_samples


class Env:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dims = init_parallel(cfg.parallel.tp, cfg.parallel.pp, seed=cfg.run.seed)
        check_divisible(cfg, self.dims.dp)
        self.out = Path(cfg.run.out_dir)
        self.world = None
        self._server = None
        self.client = None
        self.embedded = cfg.data.train == EMBEDDED
        if self.embedded:
            from gadx.world import World

            kw = {"n_train": cfg.data.world_train_size} if cfg.data.world_train_size else {}
            self.world = World(seed=cfg.data.world_seed, **kw)
            train = [Sample([{"role": "user", "content": ex.prompt}]) for ex in self.world.split("train")]
        else:
            train = load_samples(cfg.data.train, prompt_key=cfg.data.prompt_key, response_key=cfg.data.response_key,
                                 limit=cfg.data.max_prompts)
        held = load_samples(cfg.data.held_out, prompt_key=cfg.data.prompt_key, response_key=cfg.data.response_key) \
            if cfg.data.held_out else None
        if held is None:  # split the held-out prompts off the end of train
            k = min(cfg.data.held_out_size, len(train) // 4)
            train, held = train[:-k], train[-k:]
        self.train, self.held = train, held
        self.num_train = len(train)
        self.tok = self._tokenizer()
        self.eos_ids = [self.tok.eos_id]
        self.model_cfg = self._model_cfg()
        self.model_cfg.check_parallel(self.dims.tp)
        self.from_scratch = cfg.discriminator.from_scratch if cfg.discriminator.from_scratch is not None \
            else cfg.model.student == EMBEDDED
        self._init_state = None

        s = cfg.stages
        max_batch = rollout_batch(s, self.dims.dp)
        self.sharded_rollout = cfg.parallel.rollout == "sharded" and self.dims.tp > 1
        if self.sharded_rollout:
            from gadx.sampler import TPKVCacheSampler

            self.engine = TPKVCacheSampler(self.model_cfg, tp_group=self.dims.tp_group, device=self.dims.device,
                                           dtype=self.dtype, max_batch=max_batch,
                                           max_seq_len=s.max_prompt_len + s.max_response_len)
        else:
            from gadx.sampler.compiled import make_sampler

            self.engine = make_sampler(self.model_cfg, compile=cfg.parallel.rollout_compile, device=self.dims.device,
                                       dtype=self.dtype, max_batch=max_batch,
                                       max_seq_len=s.max_prompt_len + s.max_response_len)
        self._connect_teacher()
        self._prompt_cache: dict[int, list[int]] = {}
        self.truncated_prompts = 0
        self._held_ids = None

    # ---- tokenizer / model -----------------------------------------------------------------

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

    def engine_weights(self, model) -> dict[str, torch.Tensor]:
        """The student's weights as the rollout engine takes them: this rank's TP shard (sharded
        rollouts, no communication) or the whole model (gathered over TP and PP)."""
        from gadx.parallel import gather_hf_state_dict
        from gadx.sampler import local_hf_state_dict

        return local_hf_state_dict(model) if self.sharded_rollout else gather_hf_state_dict(model)

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
        if self._init_state is None:
            if self.cfg.model.student == EMBEDDED:
                torch.manual_seed(self.cfg.run.seed)
                model = self.build(seed=self.cfg.run.seed)
            else:
                model = self.load(self.cfg.model.student)
            # kept on the host: it is read once per seed (the "before" row, a fresh student), and on
            # a GPU a device copy would hold a student's worth of memory for the whole run
            self._init_state = {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v
                                for k, v in model.state_dict().items()}
        return self._init_state

    # ---- teacher ---------------------------------------------------------------------------

    def _connect_teacher(self) -> None:
        """Only global rank 0 talks to the teacher (gadx.train.teacher_feed): it alone holds the
        client, its cache and the embedded server; ``self.remote_teacher`` is the same everywhere."""
        t = self.cfg.teacher
        self.remote_teacher = False
        if t.replies_file:
            replies = load_samples(t.replies_file)
            by_prompt = {repr(s.messages): s.reply for s in replies if s.reply is not None}
            for s in self.train + self.held:
                s.reply = s.reply if s.reply is not None else by_prompt.get(repr(s.messages))
            missing = sum(s.reply is None for s in self.train + self.held)
            if missing:
                raise ValueError(f"teacher.replies_file {t.replies_file!r} has no reply for {missing} prompts")
            return
        if all(s.reply is not None for s in self.train + self.held):
            return
        if t.base_url == EMBEDDED and self.world is None:
            raise ValueError("teacher.base_url='embedded' needs the embedded data (data.train='embedded')")
        self.remote_teacher = True
        error = None
        if self.dims.rank == 0:
            try:
                self._open_client()
            except Exception as e:  # noqa: BLE001 - re-raised below, after the others have heard of it
                error = e
        message = _bcast(None if error is None else str(error))  # every rank fails together, none waits
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(f"rank 0 could not open the teacher: {message}")

    def _open_client(self) -> None:
        t = self.cfg.teacher
        url = t.base_url
        if url == EMBEDDED:
            from gadx.serve import start_in_thread
            from gadx.serve.backends import SyntheticBackend

            # served by the process that fetches: reachable over loopback on any node layout
            self._server = start_in_thread(SyntheticBackend(self.cfg.data.world_seed), host=t.embedded_host)
            url = self._server.url if t.embedded_host not in ("0.0.0.0", "::") \
                else f"http://127.0.0.1:{self._server.port}/v1"  # a wildcard bind: ask over loopback
        from gadx.teacher import TeacherClient

        cache = t.cache_path or str(self.out / "teacher_cache.sqlite")
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        self.client = TeacherClient(url, t.model, cache_path=cache, api_key_env=t.api_key_env or None,
                                    max_in_flight=t.max_in_flight, max_usd=t.max_usd or None)
        self._check_reachable(url)

    def _check_reachable(self, url: str) -> None:
        import urllib.error
        import urllib.request
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        try:
            with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/", timeout=5):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered
        except (urllib.error.URLError, OSError) as e:
            raise ValueError(f"teacher at {url} is unreachable ({getattr(e, 'reason', e)})") from None

    def request(self, i: int) -> dict[str, Any]:
        s = self.train[i]
        if s.reply is not None:
            return {"reply": s.reply}
        t = self.cfg.teacher
        # a fixed seed makes the teacher's reply a function of the prompt: reproducible runs
        return {"messages": s.messages, "temperature": t.temperature, "max_tokens": t.max_tokens, "seed": t.seed}

    def prefetcher(self, batches):
        """The step feed (collective ``get``): ``batches`` yields each step's requests for all of
        its prompts; rank 0 fetches them, every rank receives its share as token ids."""
        from .teacher_feed import TeacherFeed

        return TeacherFeed(batches, remote=self.remote_teacher, client=self.client, encode=self.reply_ids,
                           depth=self.cfg.teacher.prefetch_depth)

    def teacher_cost(self) -> float:
        """Spent so far (rank 0 holds the client; 0 on the other ranks, which log nothing)."""
        return float(self.client.stats()["cost_usd"]) if self.client is not None else 0.0

    def teacher_texts(self, samples: list[Sample]) -> list[str]:
        """Collective: the teacher's replies to ``samples`` on every rank, asked by rank 0 only."""
        from .teacher_feed import fetch_texts

        t = self.cfg.teacher
        reqs = [{"reply": s.reply} if s.reply is not None else
                {"messages": s.messages, "temperature": t.temperature, "max_tokens": t.max_tokens, "seed": t.seed}
                for s in samples]
        return fetch_texts(self.client, reqs, remote=self.remote_teacher)

    # ---- tokens ----------------------------------------------------------------------------

    def prompt_ids(self, i: int) -> list[int]:
        if i not in self._prompt_cache:
            p = encode_prompt(self.tok, self.train[i].messages, self.cfg.stages.max_prompt_len)
            self.truncated_prompts += p.truncated
            self._prompt_cache[i] = p.ids
        return self._prompt_cache[i]

    def reply_ids(self, text: str) -> list[int]:
        return encode_teacher_reply(self.tok, text, self.cfg.stages.max_response_len)

    def heldout(self) -> tuple[list[list[int]], list[list[int]]]:
        if self._held_ids is None:
            texts = [s.reply for s in self.held] if all(s.reply is not None for s in self.held) else self.teacher_texts(self.held)
            self._held_ids = ([encode_prompt(self.tok, s.messages, self.cfg.stages.max_prompt_len).ids for s in self.held],
                              [self.reply_ids(t) for t in texts])
        return self._held_ids

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._server is not None:
            self._server.stop()
