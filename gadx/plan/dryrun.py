"""One GAD step of the real trainer as one rank of a recipe's layout, on fake tensors.

    r = plan_rank(cfg, model_cfg, world=8, rank=0)            # fake GPU (gadx.plan.fakedev)
    r.peak, r.components, r.phases, r.host_reads
    r = plan_rank(cfg, model_cfg, world=1, rank=0, fake=False)  # the same on real CPU tensors

What runs is the trainer's own code: ``gadx.models.build_model`` for the student, the
discriminator (by ``discriminator.kind``: ``gadx.train.disc_kind``, the trainer's rule) and the
frozen reference, ``Player`` (megatron DDP + distributed optimizer),
the rollout engine the trainer would build (``KVCacheSampler`` or ``TPKVCacheSampler``) and
its weight sync, then ``gadx.train.step.gad_step``: rollout, old and reference log-probs,
D scoring, advantages, D's Bradley-Terry update and the GRPO update through megatron's
schedule, backward and optimizer steps included. One process poses as ``rank`` of
``world`` over torch's fake process group (collectives return at once).

Where the real code cannot run on fake tensors, a narrow bridge stands in (see
docs/dry_run.md):
* the sampler's decode loop reads "all finished?" and the sampled tokens back to the host,
  which fake tensors cannot answer: ``_PlanRollout`` runs the engine's prefill and
  ``decode_steps`` decode steps for every call (the KV cache is allocated whole up front, so
  more steps add no memory) and returns worst-case replies: every sample is
  ``max_response_len`` tokens, as is every teacher reply, every prompt ``max_prompt_len``;
* at PP > 1 the weight sync (``gadx.parallel.gather_hf_state_dict``) first all-gathers each
  stage's tensor names and shapes as objects, which the fake group does not carry: ``_plan_gather``
  makes them up from the config and runs the real exchange (fake flat buffers on the device);
* host reads inside the step (``Player.step``'s finite check, megatron's found-inf and
  grad-norm ``.item()``) get a placeholder (finite, norm 0), and every one is recorded with
  its call site in ``host_reads`` (the step should have none besides those).
The fused log-prob / GRPO kernels run their chunked PyTorch path (Triton cannot run on fake
tensors), which holds the same [chunk, V] buffers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from gadx.models import ModelConfig, build_model
from gadx.train.config import perf_config
from gadx.sampler.engine import Rollout

from .memory import PhaseMemory


@dataclass
class RankPlan:
    rank: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    device: str
    peak: int
    components: dict[str, int]
    phases: dict[str, dict[str, int]]
    host_reads: list[str] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    cuda_max_allocated: int = 0  # a real run on CUDA: torch.cuda.max_memory_allocated over the same span
    rollout_only: list[str] = field(default_factory=list)  # components freed after the rollout phase

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: self.phases[k]["peak"]) if self.phases else ""


# ---- the process group a rank is posed in ----------------------------------------------------


@contextlib.contextmanager
def posed_rank(tp: int, pp: int, *, world: int, rank: int, seed: int = 0):
    """init_parallel(tp, pp) as ``rank`` of ``world`` over the fake process group; torn down after."""
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from gadx.parallel import destroy_parallel, init_parallel
    from gadx.parallel.state import current_parallel

    if world % (tp * pp):
        raise ValueError(f"world size {world} is not divisible by tp*pp = {tp}*{pp}")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside [0, {world})")
    if current_parallel() is not None or dist.is_initialized():
        raise RuntimeError("a process group is already initialised: the plan poses ranks in a clean process state")
    from megatron.core import parallel_state as ps

    dist.init_process_group(backend="fake", store=FakeStore(), rank=rank, world_size=world)
    # megatron also makes gloo copies of some groups (the optimizer asks for them); gloo cannot
    # run on the fake store: they become fake groups too
    orig = ps.create_group

    def create_group(*args, **kwargs):
        if kwargs.get("backend") == "gloo":
            kwargs["backend"] = None
        return orig(*args, **kwargs)

    # Object collectives pickle into tensors the fake group never fills: one process poses
    # every rank of an SPMD program, so every rank's object is taken to be this rank's.
    orig_ago, orig_bol = dist.all_gather_object, dist.broadcast_object_list

    def all_gather_object(object_list, obj, group=None):
        object_list[:] = [obj] * len(object_list)

    def broadcast_object_list(object_list, src=None, group=None, device=None, group_src=None):
        return None

    ps.create_group = create_group
    dist.all_gather_object, dist.broadcast_object_list = all_gather_object, broadcast_object_list
    try:
        yield init_parallel(tp, pp, seed=seed)
    finally:
        ps.create_group = orig
        dist.all_gather_object, dist.broadcast_object_list = orig_ago, orig_bol
        destroy_parallel()


# ---- bridges -----------------------------------------------------------------------------------


class _PlanRollout:
    """The trainer's rollout engine with a fixed-length decode (see the module docstring)."""

    def __init__(self, engine, decode_steps: int, max_calls: int = 0):
        self.engine = engine
        self.decode_steps = decode_steps
        self.max_calls = max_calls  # >0: calls after the first max_calls skip the decoder (same memory)
        self.calls = 0
        self.released = False  # the step freed the KV cache and weight copy after its rollout

    def load_weights(self, hf_state_dict) -> None:
        self.engine.load_weights(hf_state_dict)

    def release(self) -> None:
        self.engine.release()
        self.released = True

    @torch.no_grad()
    def generate(self, prompts, *, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, eos_ids=(), seed=None) -> Rollout:
        e = self.engine
        prompts = [list(p) for p in prompts]
        e._check(prompts, max_new_tokens, temperature, top_p, top_k, list(eos_ids))
        self.calls += 1
        if not self.max_calls or self.calls <= self.max_calls:
            self._decode(prompts, max_new_tokens, temperature, top_p, top_k)
        filler = next(i for i in range(3, 1 << 20) if i not in set(eos_ids))
        B = len(prompts)
        return Rollout(responses=[[filler] * max_new_tokens for _ in prompts],
                       logprobs=[torch.zeros(max_new_tokens) for _ in prompts],
                       finished=[False] * B, lengths=torch.full((B,), max_new_tokens))

    def _decode(self, prompts, max_new_tokens, temperature, top_p, top_k) -> None:
        e = self.engine
        dev, B, P = e.device, len(prompts), max(map(len, prompts))
        ids_BP = torch.tensor([[0] * (P - len(p)) + p for p in prompts], dtype=torch.long).to(dev)
        plen_B = torch.tensor([len(p) for p in prompts]).to(dev)
        pad_B = P - plen_B
        slots_S = torch.arange(e.max_seq_len, device=dev)
        bias_BS = torch.zeros(B, e.max_seq_len, device=dev, dtype=e.dtype)
        bias_BS.masked_fill_(slots_S[None] < pad_B[:, None], float("-inf"))
        logits_BV = e.decoder.prefill(ids_BP, pad_B)
        tok_B, _ = e._select(logits_BV, temperature, top_k, top_p, None)
        for t in range(min(self.decode_steps, max_new_tokens - 1)):
            logits_BV = e.decoder.decode(tok_B, plen_B + t, P + t, bias_BS)
            tok_B, _ = e._select(logits_BV, temperature, top_k, top_p, None)


def _plan_gather(model) -> dict[str, torch.Tensor]:
    """``gadx.parallel.gather_hf_state_dict`` at PP > 1, run as the trainer runs it, but with the
    stages' names and shapes made up from the config: the fake group carries no objects, so
    ``stage_metas`` would see this stage's list everywhere. The other stages' tensors arrive as
    fake flat buffers of their sizes on the device, as a real run's broadcasts would leave them."""
    from gadx.parallel.gather import exchange_stages
    from gadx.sampler.decoder import expected_shapes

    dims = model.dims
    local = model.hf_state_dict()
    own = [(k, tuple(v.shape), v.dtype) for k, v in local.items()]
    dtype = own[0][2]
    metas: list[list] = [[] for _ in range(dims.pp)]
    metas[dims.pp_rank] = own
    other = next(s for s in range(dims.pp) if s != dims.pp_rank)
    for k, shape in expected_shapes(model.config).items():
        if k in local:
            continue
        m = re.match(r"model\.layers\.(\d+)\.", k)  # layers split evenly, embedding first, norm / head last
        stage = int(m.group(1)) * dims.pp // model.config.num_layers if m else (0 if "embed" in k else dims.pp - 1)
        metas[stage if stage != dims.pp_rank else other].append((k, tuple(shape), dtype))
    return exchange_stages(local, metas, dims)


class _HostReadLog(torch.overrides.TorchFunctionMode):
    """Records every device -> host read (and answers it with a placeholder on fake tensors)."""

    READS = {torch.Tensor.item: "item", torch.Tensor.__bool__: "bool", torch.Tensor.__float__: "float",
             torch.Tensor.__int__: "int", torch.Tensor.tolist: "tolist", torch.Tensor.cpu: "cpu"}

    def __init__(self, device: torch.device, fake: bool):
        super().__init__()
        self.device, self.fake = device, fake
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        what = self.READS.get(func)
        if what is None and func is torch.Tensor.to and args and isinstance(args[0], torch.Tensor):
            dst = args[1] if len(args) > 1 else kwargs.get("device")
            if isinstance(dst, (str, torch.device)) and torch.device(dst).type == "cpu":
                what = "to(cpu)"
        if what is None or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        on_device = args[0].device == self.device
        if on_device:
            self.reads.append(f"{what} at {_call_site()}")
        if not self.fake or what in ("cpu", "to(cpu)"):
            return func(*args, **kwargs)
        # placeholders: a device value reads as 0 (no inf found, grad norm 0, "all finite" is
        # True), a host one as 1 (AdamW's step count, which it divides by)
        if what == "bool":
            return True
        value = 0 if on_device else 1
        if what == "tolist":
            return _nested(tuple(args[0].shape), value)
        return value if what == "int" else float(value)


def _nested(shape, value):
    if not shape:
        return value
    return [_nested(shape[1:], value) for _ in range(shape[0])]


def _call_site() -> str:
    """The innermost frame outside torch: who asked for the host read."""
    for fr in reversed(traceback.extract_stack()[:-2]):  # minus this function and the mode's __torch_function__
        f = fr.filename
        if "/torch/" in f or "/contextlib.py" in f:
            continue
        short = f.split("/site-packages/")[-1].split("/gadx/", 1)[-1]
        return f"{short}:{fr.lineno} ({fr.name})"
    return "?"


@contextlib.contextmanager
def _megatron_bridges():
    """Without TE or apex, megatron's grad norm (``clip_grads.l2_norm_impl`` =
    ``utils.local_multi_tensor_l2_norm``) builds ``torch.tensor(list of 0-d device norms)``: one
    host read per gradient tensor, which fake tensors cannot answer (and which costs a GPU as
    many syncs per step). Inside the plan it is the same norm over ``torch.stack``. DDP's
    ``_coalescing_manager`` issues coalesced c10d ops that have no fake-tensor implementation:
    inside the plan each bucket's collective runs on its own."""
    from megatron.core.optimizer import clip_grads

    def l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
        norms = [torch.linalg.vector_norm(t.float()) for ts in tensor_lists for t in ts]
        return torch.linalg.vector_norm(torch.stack(norms)).reshape(1), None

    from megatron.core.distributed import param_and_grad_buffer as pgb

    class _Done:
        def wait(self):
            return None

    @contextlib.contextmanager
    def uncoalesced(group=None, device=None, async_ops=False):
        # the coalesced c10d ops have no fake-tensor implementation: run each op on its own
        yield _Done()

    orig = clip_grads.l2_norm_impl, pgb._coalescing_manager
    clip_grads.l2_norm_impl, pgb._coalescing_manager = l2_norm, uncoalesced
    try:
        with _recompute_constants():
            yield
    finally:
        clip_grads.l2_norm_impl, pgb._coalescing_manager = orig


@contextlib.contextmanager
def _recompute_constants():
    """megatron's selective recompute passes the attention mask type through its (reentrant)
    checkpoint as a 1-element tensor and reads it back with ``.item()`` when backward re-runs the
    core attention: a fake tensor has no value to read then. Inside the plan the same recompute
    (the core attention's inputs kept, the core re-run in backward) goes through torch's
    non-reentrant checkpoint with the mask type as a Python value: the memory is the same."""
    from torch.utils.checkpoint import checkpoint

    from megatron.core.transformer.attention import Attention

    orig = Attention._checkpointed_attention_forward

    def checkpointed(self, query, key, value, attention_mask, rotary_pos_emb=None, attn_mask_type=None,
                     attention_bias=None, packed_seq_params=None):
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type

        def core(q, k, v, m):
            return self.core_attention(q, k, v, m, attn_mask_type=mask_type, attention_bias=attention_bias,
                                       packed_seq_params=packed_seq_params)

        return checkpoint(core, query, key, value, attention_mask, use_reentrant=False)

    Attention._checkpointed_attention_forward = checkpointed
    try:
        yield
    finally:
        Attention._checkpointed_attention_forward = orig


@contextlib.contextmanager
def _torch_kernels():
    """gadx.kernels on their chunked PyTorch path (Triton cannot run on fake tensors; the Triton
    path holds the same [chunk, V] buffers), for the fake and the real-tensor run alike."""
    import os

    old = os.environ.get("GADX_KERNEL_BACKEND")
    os.environ["GADX_KERNEL_BACKEND"] = "torch"
    try:
        yield
    finally:
        if old is None:
            del os.environ["GADX_KERNEL_BACKEND"]
        else:
            os.environ["GADX_KERNEL_BACKEND"] = old


@contextlib.contextmanager
def _math_attention(device):
    """Real tensors, with the attention kernel the fake device runs: SDPA's math path (bmm,
    softmax, bmm; each packed document's [H, L, L] scores materialised: gadx's CPU / no-flash-attn
    path, gadx.models.varlen), so a comparison measures the tracker, not a kernel choice. A GPU
    with flash-attn runs its varlen kernel instead and holds no scores: there the plan's
    attention activations are an upper bound."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield device


@contextlib.contextmanager
def _gpu_init(fake: bool):
    """Build models as on a GPU: megatron initialises weights in place on the device
    (``use_cpu_initialization`` follows ``torch.cuda.is_available()``), where its CPU path moves
    tied embeddings with ``weight.data = weight.data.cuda()``, a type change fake tensors refuse."""
    if not fake:
        yield
        return
    orig = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        yield
    finally:
        torch.cuda.is_available = orig


# ---- one rank ----------------------------------------------------------------------------------


def _engine(cfg, mcfg: ModelConfig, dims, dtype):
    """The rollout engine gadx.train.env.Env builds, with its max_batch."""
    from gadx.sampler import KVCacheSampler, TPKVCacheSampler
    from gadx.train.env import rollout_batch

    s = cfg.stages
    max_batch = rollout_batch(s, dims.dp)
    kw = dict(device=dims.device, dtype=dtype, max_batch=max_batch, max_seq_len=s.max_prompt_len + s.max_response_len)
    if cfg.parallel.rollout == "sharded" and dims.tp > 1:
        return TPKVCacheSampler(mcfg, tp_group=dims.tp_group, **kw), True
    return KVCacheSampler(mcfg, **kw), False


def plan_rank(cfg, mcfg: ModelConfig, *, world: int, rank: int, fake: bool = True, decode_steps: int = 2,
              max_microbatches: int = 0, log=None, after_step=None) -> RankPlan:
    """Build the trainer's models for ``rank`` of ``world`` and run one GAD step; see the module docstring.

    ``max_microbatches`` (0 = all): each pass through megatron's schedule runs its first k
    micro-batches (at least PP + 1, what 1F1B keeps in flight) and the rest get zero outputs
    of their shapes; likewise only the first k sampler calls run the decoder. Every
    micro-batch is still packed and held. At the plan's worst-case lengths all micro-batches
    of a pass are equally full (first-fit-decreasing puts the fullest first), so the peak is
    the same and a 7B step takes minutes instead of an hour of fake-op dispatch.

    ``after_step(ctx, batch)`` (tests): more of the trainer's verbs on the same players, batch and
    fake GPU after the GAD step (e.g. warmup's D step), with no phase marks; their host reads join
    ``host_reads`` and their memory the whole-step peak."""
    from gadx.sampler import local_hf_state_dict
    from gadx.parallel import gather_hf_state_dict
    from gadx.train.player import Player
    from gadx.train.step import Batch, StepContext, gad_step

    from .fakedev import fake_gpu

    log = log or (lambda msg: None)
    st, par = cfg.stages, cfg.parallel
    dtype = getattr(torch, cfg.model.dtype)
    t0 = time.perf_counter()
    with posed_rank(par.tp, par.pp, world=world, rank=rank, seed=cfg.run.seed) as dims0:
        P = st.prompts_per_step // dims0.dp
        if P * dims0.dp != st.prompts_per_step:
            raise ValueError(f"stages.prompts_per_step={st.prompts_per_step} is not divisible by DP={dims0.dp}")
        with (fake_gpu() if fake else _math_attention(dims0.device)) as dev, _megatron_bridges(), _torch_kernels():
            dims = dataclasses.replace(dims0, device=torch.device(dev))
            mem = PhaseMemory(dims.device)
            on_cuda = dims.device.type == "cuda"
            if on_cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated(dims.device)
                torch.cuda.reset_peak_memory_stats(dims.device)
            reads = _HostReadLog(dims.device, fake)
            with mem:
                # fusions="auto" follows this machine, not the posed GPU (_gpu_init says CUDA): on a CPU
                # machine the plan counts the unfused ops (the fused SwiGLU keeps less for backward)
                perf = perf_config(cfg)
                if perf.fusions == "auto" and not torch.cuda.is_available():
                    perf = dataclasses.replace(perf, fusions="off")

                def build(head, seed):
                    with _gpu_init(fake):
                        return build_model(mcfg, head=head, parallel=dims, dtype=dtype, seed=seed,
                                           use_te=cfg.model.use_te, fp8=cfg.model.fp8 or None, perf=perf)

                class TrackedPlayer(Player):
                    """Player with the loss entry/exit marks and the host-read bridge around step()."""

                    def run(self, mbs, forward_step, *, forward_only=False):
                        k = max(max_microbatches, dims.pp + 1) if max_microbatches else len(mbs)
                        if k < len(mbs):
                            outs = self._run(mbs[:k], forward_step, forward_only)
                            return outs + _filler_outs(outs, mbs[:k], mbs[k:])
                        return self._run(mbs, forward_step, forward_only)

                    def _run(self, mbs, forward_step, forward_only):
                        def fs(mb, chunk):
                            out, loss_func = forward_step(mb, chunk)

                            def lf(hidden):
                                mem.loss_enter()
                                try:
                                    return loss_func(hidden)
                                finally:
                                    mem.loss_exit()
                            return out, lf
                        return super().run(mbs, fs, forward_only=forward_only)

                    def step(self, loss):
                        with reads:
                            return super().step(loss)

                log(f"rank {rank}: building the student")
                student = build("lm", cfg.run.seed)
                mem.mark("weights: student")
                G = TrackedPlayer(student, lr=st.gad.lr, weight_decay=st.weight_decay, clip_grad=st.grad_clip)
                grads_G = _grad_bytes(G, dims.device)
                mem.mark("optimizer: student")
                # D as the trainer builds it: by discriminator.kind (a score head, or a whole LM with
                # ImplicitReward), its GAD-stage lr by kind
                from gadx.train.config import d_lrs
                from gadx.train.disc_kind import disc_kind

                d_head, implicit = disc_kind(cfg)
                log(f"rank {rank}: building the discriminator ({cfg.discriminator.kind}, head {d_head!r})")
                disc = build(d_head, cfg.run.seed + 1)
                mem.mark("weights: discriminator")
                D = TrackedPlayer(disc, lr=d_lrs(cfg)[1], weight_decay=st.weight_decay, clip_grad=st.grad_clip,
                                  implicit=implicit)
                grads_D = _grad_bytes(D, dims.device)
                head_D = _head_bytes(disc, D, dims)
                mem.mark("optimizer: discriminator")
                log(f"rank {rank}: building the reference")
                ref = TrackedPlayer(build("lm", cfg.run.seed), trainable=False)
                mem.mark("weights: reference")
                # Adam's moments appear at the first step: one step on zero gradients makes the
                # state a running job holds at every later step.
                for p in (G, D):
                    with reads:
                        p.opt.step()
                mem.mark("optimizer: Adam moments")
                engine, sharded = _engine(cfg, mcfg, dims, dtype)
                mem.mark("KV cache")
                roll = _PlanRollout(engine, decode_steps, max_microbatches)

                def sync():
                    m = G.model
                    with mem.grows("gathered sampler copy"):
                        sd = local_hf_state_dict(m) if sharded else (gather_hf_state_dict(m) if dims.pp == 1 else _plan_gather(m))
                        roll.load_weights(sd)
                        del sd  # what stays is what the engine holds

                rec = _PhaseRecorder(mem, log, old_logprobs=cfg.stages.gad.policy_epochs > 1,
                                     student_logliks=implicit is not None)
                ctx = StepContext(student=G, disc=D, ref=ref, engine=roll, sync_weights=sync, eos_ids=mcfg.eos_ids or [2],
                                  stages=st, budget=par.micro_batch_tokens, dims=dims, sample_seed=0, recorder=rec)
                batch = Batch(prompts=[[5] * st.max_prompt_len for _ in range(P)],
                              teacher=[[6] * st.max_response_len for _ in range(P)],
                              teacher_finished=[False] * P, global_prompts=st.prompts_per_step, first=dims.dp_rank * P)
                log(f"rank {rank}: one GAD step ({P} prompts x {st.n_samples} samples on this DP rank)")
                reads.reads.clear()
                mem.phase("rollout")
                with reads:
                    m = gad_step(ctx, batch, 0)
                    mem.end_phase()
                    if after_step is not None:
                        ctx.recorder = None
                        after_step(ctx, batch)
                    metrics = {k: v for k, v in m.items() if not isinstance(v, torch.Tensor)}
            comps = _split(mem.components, grads_G, grads_D, head_D)
            cuda_peak = torch.cuda.max_memory_allocated(dims.device) - base if on_cuda else 0
    return RankPlan(rank=rank, tp_rank=dims.tp_rank, pp_rank=dims.pp_rank, dp_rank=dims.dp_rank, device=str(dims.device),
                    peak=mem.peak, components=comps, phases=mem.phases, host_reads=_uniq(reads.reads),
                    seconds=time.perf_counter() - t0, metrics=metrics, cuda_max_allocated=cuda_peak,
                    rollout_only=["KV cache", "gathered sampler copy"] if roll.released else [])


def _filler_outs(outs: list[dict], ran: list, rest: list) -> list[dict]:
    """Zero loss_func outputs for the micro-batches a capped pass skipped, shaped like the ones
    that ran: per token, per packed sequence, or 0-d. [] off the last stage, as megatron gives."""
    if not outs:
        return []
    proto, mb0 = outs[0], ran[0]
    out = []
    for mb in rest:
        d = {}
        for k, v in proto.items():
            if v.dim() == 0:
                d[k] = torch.zeros((), dtype=v.dtype, device=v.device)
            elif v.shape[0] == mb0.num_tokens:
                d[k] = torch.zeros(mb.num_tokens, dtype=v.dtype, device=v.device)
            else:
                assert v.shape[0] == len(mb0.seqs), (k, tuple(v.shape))
                d[k] = torch.zeros(len(mb.seqs), dtype=v.dtype, device=v.device)
        out.append(d)
    return out


class _PhaseRecorder(list):
    """StepContext.recorder: each note ends a phase of the step and starts the next."""

    NEXT = {"sample": "old_logprobs", "old_logprobs": "ref_logprobs", "ref_logprobs": "d_score",
            "d_score": "advantages", "advantages": "d_update", "d_update": "g_update"}

    def __init__(self, mem: PhaseMemory, log, *, old_logprobs: bool, student_logliks: bool = False):
        super().__init__()
        self.mem, self.log = mem, log
        if not old_logprobs:  # one policy update per rollout: gad_step skips that forward
            self.NEXT = {**self.NEXT, "sample": "ref_logprobs"}
        if student_logliks:  # the implicit D's reference: one no-grad student forward over D's pairs
            self.NEXT = {**self.NEXT, "ref_logprobs": "student_logliks", "student_logliks": "d_score"}
        self.t0 = time.perf_counter()

    def append(self, what: str) -> None:
        super().append(what)
        self.log(f"  {what} done ({time.perf_counter() - self.t0:.0f} s)")
        if what in self.NEXT:
            self.mem.phase(self.NEXT[what])
        else:
            self.mem.end_phase()


def _grad_bytes(player, device) -> int:
    """Bytes of the DDP gradient buffers (megatron keeps grads in flat fp32 buffers)."""
    total = 0
    for c in player.chunks:
        for buf in getattr(c, "buffers", []):
            if buf.grad_data.device == device:
                total += buf.grad_data.numel() * buf.grad_data.element_size()
    return total


def _head_bytes(disc, D, dims) -> dict[str, int]:
    """What D's own head holds on this rank, by component: the parameters that differ between the
    kinds (``output_layer``: the implicit D's LM head [V/TP, H], absent when tied to the embedding on
    one stage; ``score_head``: the score D's [1, H]). Weights at their dtype; DDP's fp32 gradient
    buffer; the distributed optimizer's fp32 main params and two Adam moments, sharded over DP."""
    params = [p for n, p in disc.named_parameters()
              if {"output_layer", "score_head"} & set(n.split(".")) and p.device == dims.device]
    numel = sum(p.numel() for p in params)
    grad_size = next((b.grad_data.element_size() for c in D.chunks for b in getattr(c, "buffers", [])), 4)
    # fp32 main params exist for 16-bit weights only (fp32 weights are their own main params)
    main = sum(p.numel() for p in params if p.dtype != torch.float32) * 4 // dims.dp
    return {"weights": sum(p.numel() * p.element_size() for p in params), "grads": numel * grad_size,
            "main": main, "moments": numel * 8 // dims.dp}


def _split(c: dict[str, int], grads_G: int, grads_D: int, head_D: dict[str, int] | None = None) -> dict[str, int]:
    """The "optimizer" marks hold DDP's gradient buffers and the optimizer's fp32 main params:
    report the gradient buffers apart; and D's head (``_head_bytes``) apart from the rest of D, so
    that what an implicit D's LM head costs is its own row."""
    out = dict(c)
    for who, g in (("student", grads_G), ("discriminator", grads_D)):
        out[f"grads: {who}"] = g
        out[f"optimizer: {who}"] = c.get(f"optimizer: {who}", 0) - g
    if head_D:
        out["weights: discriminator head"] = head_D["weights"]
        out["weights: discriminator"] -= head_D["weights"]
        out["grads: discriminator head"] = head_D["grads"]
        out["grads: discriminator"] -= head_D["grads"]
        # the optimizer's shard of the head: estimated as 1/DP of it (megatron shards each bucket evenly)
        out["optimizer: discriminator head"] = head_D["main"] + head_D["moments"]
        out["optimizer: discriminator"] -= head_D["main"]
        out["optimizer: Adam moments"] -= head_D["moments"]
    return out


def _uniq(xs: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for x in xs:
        seen[x] = seen.get(x, 0) + 1
    return [f"{k} x{n}" if n > 1 else k for k, n in seen.items()]
