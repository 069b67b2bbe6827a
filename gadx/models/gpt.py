"""Llama 3 / Qwen2 decoder as a megatron-core GPTModel, behind a batch-first API.

    from gadx.models import build_model, ModelConfig
    model = build_model(cfg)                          # single process: sets up TP=PP=1 itself
    hidden_BTH = model.hidden(input_ids_BT)          # final-normed, last pipeline stage
    logits_BTV = model.logits(input_ids_BT)          # exactly cfg.vocab_size columns
    d = build_model(cfg, head="score")               # discriminator: Linear(H, 1) + bias
    scores_B = d.score(input_ids_BT, lengths_B)      # score at position lengths-1

Inside, activations are megatron's [T, B, H]. ``hidden`` runs the embedding and the decoder
block (whose last stage applies the final RMSNorm) directly and never GPTModel's output
layer, so no [B, T, V] logits copy is made; RoPE angles are computed here from position
ids, so packed sequences restart positions per document and attend causally within their
own document only: a packed row [1, T] travels as megatron's THD format with
``packed_seq_params`` (``gadx.models.varlen``: cu_seqlens, no [T, T] mask), which the
training micro-batches carry (``MicroBatch.packed``); ``doc_ids_BT`` is a convenience that
builds them (reading the ids back to the host).

Vocabulary: megatron shards the embedding/LM head rows over TP, so the vocab is padded to a
multiple of TP (no padding at TP=1). ``head_weight`` is this rank's [V_local, H] shard;
``vocab_range`` is the [start, end) of *real* token ids it holds (pad rows are zero and
must be ignored by vocab-parallel kernels). ``logits`` gathers and drops the pad columns.

Under pipeline parallelism ``hidden`` is the per-stage forward the megatron schedule calls:
non-first stages read the activation the schedule set with ``set_input_tensor``; non-last
stages return their [T, B, H] activation for the schedule to send.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from gadx.models.config import ModelConfig
from gadx.models.fp8 import FP8Config, check_fp8_shapes, resolve_fp8, transformer_config_kwargs
from gadx.models.perf import Kernels, PerfConfig, enable_grad_accum_fusion, fusion_plan, recompute_kwargs, token_multiple
from gadx.models.rope import rope_inv_freq  # noqa: F401 -- also used by the sampler, which must not import megatron
from gadx.models.sp import gather_hidden, pad_tokens, sp_block_spec
from gadx.models.spec import layer_spec
from gadx.models.vocab import padded_vocab_size, vocab_shard
from gadx.models.varlen import as_varlen, doc_lens_from_ids, doc_lens_of, varlen_params

HEADS = ("lm", "score")


def positions_from_docs(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """Position ids restarting at 0 where the doc id changes."""
    B, T = doc_ids_BT.shape
    idx_BT = torch.arange(T, device=doc_ids_BT.device).expand(B, T)
    change_BT = torch.ones_like(doc_ids_BT, dtype=torch.bool)
    change_BT[:, 1:] = doc_ids_BT[:, 1:] != doc_ids_BT[:, :-1]
    start_BT = torch.where(change_BT, idx_BT, torch.zeros_like(idx_BT)).cummax(dim=1).values
    return idx_BT - start_BT


def transformer_config(cfg: ModelConfig, *, tp: int, pp: int, dtype: torch.dtype, init_weights: bool = True,
                       fp8: FP8Config | None = None, perf: PerfConfig | None = None, use_te: bool = False,
                       kernels: Kernels | None = None):
    from megatron.core.transformer.transformer_config import TransformerConfig

    if cfg.num_layers % pp:
        raise ValueError(f"pipeline parallel size {pp} does not divide num_layers={cfg.num_layers}")
    perf = perf or PerfConfig()
    # fused kernels where they can run (gadx.models.perf): all off on CPU
    fusions = fusion_plan(perf.fusions, use_te=use_te, kernels=kernels or Kernels.detect())
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_heads,
        num_query_groups=cfg.num_kv_heads,
        kv_channels=cfg.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=cfg.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=not torch.cuda.is_available(),
        gradient_accumulation_fusion=False,  # gadx.parallel.wrap_ddp turns it on for DDP-trained models
        persist_layer_norm=False,
        **fusions,
        sequence_parallel=perf.sequence_parallel and tp > 1,
        **recompute_kwargs(perf, cfg.num_layers // pp),
        # Pipeline p2p as separate isend/irecv pairs, not one batch_isend_irecv: megatron's
        # batched path gives wrong activations from the second micro-batch on under interleaved
        # PP (megatron-core issues 750 / 1450). gadx runs one model chunk per stage (no virtual
        # stages), where the batched path is not known to be wrong; the unbatched one is used
        # anyway so that adding virtual stages later cannot silently hit the bug. (With virtual
        # stages, also set overlap_p2p_comm=True: the interleaved schedule overlaps p2p then.)
        batch_p2p_comm=False,
        overlap_p2p_comm=False,
        **transformer_config_kwargs(fp8),
        # Not perform_initialization=False: on the CPU-init path megatron then also skips
        # tagging params as tensor-parallel, and clip_grads counts TP shards as duplicates.
        **({} if init_weights else dict(init_method=_skip_init, output_layer_init_method=_skip_init,
                                       embedding_init_method=_skip_init)),
    )


def _skip_init(weight: torch.Tensor) -> None:
    """Init method that leaves the weight as allocated (a checkpoint fills it next)."""


class GadxModel(nn.Module):
    """megatron GPTModel (``.gpt``) + batch-first API. Built by ``build_model``."""

    def __init__(self, gpt, cfg: ModelConfig, head: str, dims):
        super().__init__()
        self.gpt = gpt
        self.config = cfg
        self.head = head
        self.dims = dims
        self.register_buffer("inv_freq", rope_inv_freq(cfg).to(dims.device), persistent=False)

    # ---- megatron schedule hooks ------------------------------------------------------------

    def set_input_tensor(self, input_tensor) -> None:
        self.gpt.set_input_tensor(input_tensor)

    @property
    def model_type(self):
        return self.gpt.model_type

    @property
    def module(self):
        # megatron's get_attr_wrapped_model unwraps `.module` chains (DDP -> GadxModel -> GPTModel)
        # to find pre_process, shared_embedding_or_output_weight, ...
        return self.gpt

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        """megatron's sharded state dict of ``.gpt`` (for ``megatron.core.dist_checkpointing``).

        Checkpoint keys are ``prefix`` + megatron's names (layout-independent global
        tensors); the dict keys are this module's ``state_dict`` keys (``gpt.`` + megatron's
        names), so ``self.load_state_dict(dist_checkpointing.load(sd, dir))`` works, also
        through megatron DDP (which forwards here)."""
        if self.head == "score":
            # The discriminator has no output layer (LanguageModule's version assumes one on the
            # last stage) and no tying: take the plain per-submodule version. The score head is
            # a torch Linear, saved replicated.
            from megatron.core.transformer.module import MegatronModule
            from megatron.core.transformer.utils import ensure_metadata_has_dp_cp_group

            sd = MegatronModule.sharded_state_dict(self.gpt, prefix, sharded_offsets,
                                                   ensure_metadata_has_dp_cp_group(metadata))
        else:
            sd = self.gpt.sharded_state_dict(prefix=prefix, sharded_offsets=sharded_offsets, metadata=metadata)
        assert all(k.startswith(prefix) for k in sd), "megatron keys without the prefix"
        return {f"gpt.{k[len(prefix):]}": v for k, v in sd.items()}

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This stage's tensors in HF names (gadx.models.hf_io.hf_state_dict): what gadx.parallel's
        gather and checkpoint code call, so that gadx.parallel never imports gadx.models."""
        from gadx.models.hf_io import hf_state_dict

        return hf_state_dict(self)

    def zero_vocab_padding(self) -> None:
        """Set the TP vocab padding rows of the embedding / LM head back to zero (after a load)."""
        _zero_vocab_padding(self)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def vocab_range(self) -> tuple[int, int]:
        """[start, end) of the real token ids in this TP rank's head/embedding shard."""
        start, end, _ = vocab_shard(self.config.vocab_size, self.dims.tp_rank, self.dims.tp)
        return start, end

    @property
    def head_weight(self) -> nn.Parameter:
        """LM head [V_local, H] of this TP rank (the embedding when tied, on single-stage PP)."""
        if self.head != "lm":
            raise ValueError("head_weight exists only for head='lm'")
        if not self.dims.is_last_stage:
            raise ValueError("head_weight lives on the last pipeline stage")
        if self.gpt.share_embeddings_and_output_weights:
            return self.gpt.shared_embedding_or_output_weight()
        return self.gpt.output_layer.weight

    def head_input(self, hidden_BTH: torch.Tensor) -> torch.Tensor:
        """Hidden states to multiply with ``head_weight`` in plain torch code: under TP each rank's
        vocab shard gives only part of d(loss)/d(hidden), so this is megatron's copy-to-TP-region
        (identity forward, all-reduce of the gradient backward). gadx.kernels' vocab_parallel_*
        functions all-reduce d(hidden) themselves: give them the raw hidden states, not this."""
        if self.dims.tp == 1:
            return hidden_BTH
        from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region

        return copy_to_tensor_model_parallel_region(hidden_BTH, self.dims.tp_group)

    @property
    def score_head(self) -> nn.Linear:
        return self.gpt.score_head

    # ---- forward ----------------------------------------------------------------------------

    def forward(self, input_ids_BT, position_ids_BT=None, doc_ids_BT=None, packed_seq_params=None) -> torch.Tensor:
        """== ``hidden``: what megatron DDP / the schedule call on a chunk."""
        return self.hidden(input_ids_BT, position_ids_BT, doc_ids_BT, packed_seq_params=packed_seq_params)

    def _rope(self, position_ids_BT: torch.Tensor) -> torch.Tensor:
        # megatron's layout: [T, B, 1, D] angles, (freqs, freqs) concatenated (non-interleaved)
        freqs_BTd = position_ids_BT.to(torch.float32)[..., None] * self.inv_freq.float()
        return torch.cat((freqs_BTd, freqs_BTd), dim=-1).transpose(0, 1)[:, :, None, :]

    token_multiple = 1  # token counts the layers need a multiple of (sequence parallelism, FP8); build_model sets it

    def enable_grad_accum_fusion(self) -> int:
        """Called by gadx.parallel.wrap_ddp just before wrapping (see gadx.models.perf)."""
        return enable_grad_accum_fusion(self)

    def hidden(self, input_ids_BT, position_ids_BT=None, doc_ids_BT=None, packed_seq_params=None) -> torch.Tensor:
        """Final-normed hidden states [B,T,H] (non-last PP stages: the [T,B,H] activation).

        Packed row (B = 1): ``packed_seq_params`` (megatron ``PackedSeqParams``, THD; see
        gadx.models.varlen) or ``doc_ids_BT`` (equal ids = one document; read back to the
        host to build the params). ``position_ids_BT`` default: restarting per document.
        A row whose length is not a multiple of ``token_multiple`` is padded at the end with a
        document of its own (no real token attends to it) and the padding sliced off again."""
        T_in = input_ids_BT.shape[1]
        B, T = input_ids_BT.shape
        if doc_ids_BT is not None:
            if packed_seq_params is not None:
                raise ValueError("give doc_ids_BT or packed_seq_params, not both")
            if B != 1:
                raise ValueError(f"a packed row is one sequence of documents (batch 1), got doc_ids of shape {tuple(doc_ids_BT.shape)}")
            packed_seq_params = varlen_params(doc_lens_from_ids(doc_ids_BT[0]), input_ids_BT.device)
            if position_ids_BT is None:
                position_ids_BT = positions_from_docs(doc_ids_BT)
        if packed_seq_params is not None:
            if B != 1:
                raise ValueError(f"packed_seq_params needs one packed row (batch 1), got input of shape {(B, T)}")
            if position_ids_BT is None:
                lens = doc_lens_of(packed_seq_params)
                position_ids_BT = torch.cat([torch.arange(n) for n in lens]).to(input_ids_BT.device)[None]
        if T_in % self.token_multiple:  # pad at the end, sliced off below (gadx.models.sp)
            if self.dims.pp > 1:
                raise ValueError(f"{T_in} tokens per micro-batch under pipeline parallelism must be a multiple of "
                                 f"{self.token_multiple} (sequence parallelism splits them over TP; FP8 needs 16 per rank)")
            if position_ids_BT is None:
                position_ids_BT = torch.arange(T, device=input_ids_BT.device).expand(B, T)
            input_ids_BT, position_ids_BT, _, _ = pad_tokens(input_ids_BT, position_ids_BT, None, self.token_multiple)
            if packed_seq_params is not None:  # the padding is one more document
                pad_doc = input_ids_BT.shape[1] - T_in
                packed_seq_params = varlen_params(doc_lens_of(packed_seq_params) + [pad_doc], input_ids_BT.device)
            B, T = input_ids_BT.shape
        if position_ids_BT is None:
            position_ids_BT = torch.arange(T, device=input_ids_BT.device).expand(B, T)
        rotary = self._rope(position_ids_BT)
        if packed_seq_params is not None:
            # RoPE moves into the core attention on the packed path (see gadx.models.varlen)
            packed_seq_params, rotary = as_varlen(packed_seq_params, rotary_T11D=rotary), None
        emb_TBH = self.gpt.embedding(input_ids=input_ids_BT, position_ids=None) if self.gpt.pre_process else None
        out_TBH = self.gpt.decoder(hidden_states=emb_TBH, attention_mask=None, rotary_pos_emb=rotary,
                                   packed_seq_params=packed_seq_params)
        if not self.dims.is_last_stage:
            return out_TBH
        if self.gpt.config.sequence_parallel:  # [T/TP, B, H] -> [T, B, H] for the heads (why: gadx.models.sp)
            out_TBH = gather_hidden(out_TBH, self.dims.tp_group)
        return out_TBH.transpose(0, 1)[:, :T_in]

    def logits(self, input_ids_BT, position_ids_BT=None, doc_ids_BT=None, packed_seq_params=None) -> torch.Tensor:
        return self.logits_from_hidden(self.hidden(input_ids_BT, position_ids_BT, doc_ids_BT, packed_seq_params))

    def logits_from_hidden(self, hidden_BTH) -> torch.Tensor:
        """Full-vocab logits [.., V] from last-stage hidden states (gathered over TP)."""
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        logits_BTv = self.head_input(hidden_BTH) @ self.head_weight.t()
        if self.dims.tp > 1:
            logits_BTv = gather_from_tensor_model_parallel_region(logits_BTv, self.dims.tp_group)
        return logits_BTv[..., : self.config.vocab_size]

    def score_hidden(self, hidden_NH: torch.Tensor) -> torch.Tensor:
        """Discriminator head on gathered hidden states, computed in fp32 -> [N]."""
        head = self.score_head
        return F.linear(hidden_NH.float(), head.weight.float(), head.bias.float()).squeeze(-1)

    def score(self, input_ids_BT, lengths_B) -> torch.Tensor:
        if self.head != "score":
            raise ValueError("score() needs a model built with head='score'")
        T = input_ids_BT.shape[1]
        if (lengths_B < 1).any() or (lengths_B > T).any():
            raise ValueError(f"lengths must be in [1, {T}], got {lengths_B.tolist()}")
        hidden_BTH = self.hidden(input_ids_BT)
        last_BH = hidden_BTH[torch.arange(hidden_BTH.shape[0], device=hidden_BTH.device), lengths_B - 1]
        return self.score_hidden(last_BH)

    def score_packed(self, input_ids_BT, doc_ids_BT, last_idx_N) -> torch.Tensor:
        """Scores of packed documents: ``last_idx_N`` indexes the flattened [B*T] tokens."""
        if self.head != "score":
            raise ValueError("score_packed() needs a model built with head='score'")
        hidden_BTH = self.hidden(input_ids_BT, doc_ids_BT=doc_ids_BT)
        return self.score_hidden(hidden_BTH.reshape(-1, hidden_BTH.shape[-1])[last_idx_N])


def build_model(cfg: ModelConfig, *, head: str = "lm", parallel=None, dtype=torch.float32,
                use_te: bool = False, fp8=None, seed: int = 0, init_weights: bool = True,
                perf: PerfConfig | None = None) -> GadxModel:
    """Randomly initialised model for this rank's TP/PP shard.

    ``use_te``: Transformer Engine layer spec (GPU). ``fp8``: None, a recipe name
    ("tensorwise", "delayed", "mxfp8", "blockwise") or a ``gadx.models.fp8.FP8Config``;
    needs ``use_te=True`` and transformer_engine (ValueError before anything is built).

    ``parallel``: the ``ParallelDims`` from ``init_parallel``; None initialises (or reuses)
    a single-process TP=PP=1 state. ``seed`` seeds the discriminator head's initialisation
    (always initialised). ``init_weights=False`` leaves the backbone uninitialised for a
    checkpoint to fill (``from_pretrained``), skipping megatron's slow CPU init.
    ``perf``: recompute, sequence parallelism and fused kernels (``gadx.models.perf``).
    """
    from megatron.core.models.gpt import GPTModel

    from gadx.parallel import cpu_adapter, current_parallel, init_parallel

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    fp8_cfg = resolve_fp8(fp8, use_te=use_te)
    if use_te:
        layer_spec(use_te)  # ValueError now, before the parallel state is touched, when TE is absent
    dims = parallel or current_parallel() or init_parallel(1, 1)
    cfg.check_parallel(dims.tp)
    if fp8_cfg is not None:
        check_fp8_shapes(cfg, dims.tp)
    tcfg = transformer_config(cfg, tp=dims.tp, pp=dims.pp, dtype=dtype, init_weights=init_weights, fp8=fp8_cfg,
                              perf=perf, use_te=use_te)
    spec = layer_spec(use_te)
    if tcfg.sequence_parallel and not use_te:  # the local spec's torch norms refuse SP
        spec = sp_block_spec(spec, cfg.num_layers // dims.pp)
    tied = cfg.tie_embeddings and head == "lm"
    with cpu_adapter.cpu_device_mode():  # tied embeddings under PP call Tensor.cuda()
        gpt = GPTModel(
            config=tcfg,
            transformer_layer_spec=spec,
            vocab_size=padded_vocab_size(cfg.vocab_size, dims.tp),
            max_sequence_length=cfg.max_position_embeddings,
            pre_process=dims.is_first_stage,
            post_process=dims.is_last_stage,
            share_embeddings_and_output_weights=tied,
            position_embedding_type="rope",
            rotary_base=cfg.rope_theta,
        )
    if head == "score" and dims.is_last_stage:
        gpt.output_layer = None
        gen = torch.Generator().manual_seed(seed)
        score = nn.Linear(cfg.hidden_size, 1, bias=True, dtype=torch.float32)  # fp32 master weights
        with torch.no_grad():
            score.weight.copy_(torch.randn(1, cfg.hidden_size, generator=gen) * tcfg.init_method_std)
            score.bias.zero_()
        # Bradley-Terry is invariant to a shift shared by all scores, so the bias's true gradient is 0
        # and its computed one is rounding noise, which Adam turns into +-lr steps: a random walk of
        # every score that depends on reduction order (it made TP=2 rewards drift from TP=1). Frozen.
        score.bias.requires_grad_(False)
        gpt.score_head = score
    model = GadxModel(gpt.to(dims.device), cfg, head, dims)
    model.perf = perf or PerfConfig()  # wrap_ddp reads the DDP-side switches from here
    model.token_multiple = token_multiple(tp=dims.tp, sequence_parallel=tcfg.sequence_parallel, fp8=fp8_cfg is not None)
    _zero_vocab_padding(model)
    return model


def _zero_vocab_padding(model: GadxModel) -> None:
    # Pad rows must stay exactly zero so pad logits are 0 and vocab-parallel kernels can mask them.
    start, end = model.vocab_range
    v_local = padded_vocab_size(model.config.vocab_size, model.dims.tp) // model.dims.tp
    n_real = end - start
    if n_real == v_local:
        return
    gpt = model.gpt
    weights = []
    if gpt.pre_process:
        weights.append(gpt.embedding.word_embeddings.weight)
    if gpt.post_process and getattr(gpt, "output_layer", None) is not None and gpt.output_layer.weight is not None:
        weights.append(gpt.output_layer.weight)
    with torch.no_grad():
        for w in weights:
            w[n_real:].zero_()
