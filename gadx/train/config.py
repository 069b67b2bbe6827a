"""Trainer configuration: nested dataclasses with working defaults, one override syntax.

    cfg = load_config(["--config", "recipes/tiny.toml", "--set", "stages.gad.steps=40"])

A recipe is a small TOML file whose tables mirror the dataclasses below
(``[stages.gad]`` sets ``TrainConfig.stages.gad``). ``--set key.sub=value``
overrides are applied after the file, in order; values are parsed by the
field's declared type. Unknown keys raise a one-line ValueError. The resolved
config is written as JSON (``to_dict``) into every checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMBEDDED = "embedded"
DTYPES = ("float32", "bfloat16")  # model.dtype: torch dtype names


@dataclass(kw_only=True)
class ModelCfg:
    student: str = EMBEDDED  # HF folder, or "embedded": a random-init tiny Qwen2-shaped model
    tokenizer: str = ""  # defaults to the student folder; embedded: trained on the world's text
    # The embedded tokenizer: sentencepiece on the world's text (unigram refuses vocab > 754 there),
    # with a chat template of gadx.tokenizer.BUILTIN_TEMPLATES (llama3 adds no default system prompt).
    vocab_size: int = 700
    chat_template: str = "llama3"
    # Shape of the embedded student (ignored for a student folder).
    # (hidden 96 / 2 KV heads never learned to copy names and numbers from the prompt within the
    # CPU budget; at 128 / 4 KV heads the copy skill appears after ~20k SFT examples: recipes/RESULTS_embedded.md)
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    # Weights of student, reference and discriminator: "float32", or "bfloat16" (fp32 grads and
    # master weights in megatron's distributed optimizer); the sampler runs in the same dtype.
    dtype: str = "float32"
    use_te: bool = False  # Transformer Engine layer spec (GPU); a clear error when TE is absent
    fp8: str = ""  # "" = off, or a gadx.models.fp8 recipe ("tensorwise", "delayed", ...); needs use_te
    # Activation recompute (gadx.models.perf): "none", "selective" (the attention core re-run in
    # backward), "full" (whole layers re-run: chunks of recompute_num_layers with method "uniform",
    # or the first recompute_num_layers layers of each pipeline stage with "block")
    recompute: str = "none"
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    # megatron's fused kernels: "auto" (each where it can run: GPU, + TE / Apex for some; all off on
    # CPU), "off", or "on" (ValueError at build naming any that cannot run). docs/distributed.md
    fusions: str = "auto"


@dataclass(kw_only=True)
class DiscriminatorCfg:
    # D starts from the student: its initial weights (pretrained student) or its weights after the
    # G-only SFT steps of warmup (a from-scratch student, see docs/design/toy-findings.md).
    from_scratch: bool | None = None  # None: True for the embedded student, False for a folder
    # "score": the student's trunk plus a fresh scalar head read at the reply's last token.
    # "implicit": D(x, y) = beta * [log P_theta(y|x) - log S_t(y|x)], P_theta a trainable copy of the
    # whole student (LM head included; D = 0 when it starts) and S_t the current student, both summed
    # over the reply's tokens at stages.temperature: the Bradley-Terry optimum is P_theta = teacher,
    # so D starts able to read (docs/gad_verdict.md: 62-70% of the gap to acc* on ~1,000 pairs, the
    # score head 11-21%).
    kind: str = "score"
    beta: float = 1.0  # the implicit D's scale (its BT optimum is beta * log T/S: 1 = the exact log-ratio)


@dataclass(kw_only=True)
class DataCfg:
    train: str = EMBEDDED  # JSONL / Parquet, or "embedded" (the synthetic world)
    held_out: str = ""  # file of held-out pairs for D's accuracy; "" -> split off train
    held_out_size: int = 64
    prompt_key: str = ""  # "" -> auto: messages / content / prompt
    response_key: str = ""  # "" -> auto: teacher_response / response; absent -> ask the teacher
    max_prompts: int = 0  # 0 = all
    world_seed: int = 0
    world_train_size: int = 0  # 0 = the world's default


@dataclass(kw_only=True)
class TeacherCfg:
    base_url: str = EMBEDDED  # OpenAI-compatible URL, or "embedded": the synthetic teacher served in a thread
    # where the embedded teacher listens (on global rank 0's node; rank 0 alone fetches, over loopback):
    # "0.0.0.0" or the node's address to reach it from elsewhere, e.g. gadx eval during a run
    embedded_host: str = "127.0.0.1"
    model: str = "synthetic"
    cache_path: str = ""  # "" -> <run.out_dir>/teacher_cache.sqlite
    api_key_env: str = ""
    prefetch_depth: int = 2
    max_in_flight: int = 64
    temperature: float = 1.0
    max_tokens: int = 256
    replies_file: str = ""  # a pre-collected JSONL/Parquet of replies instead of the API
    max_usd: float = 0.0  # 0 = no budget guard
    seed: int = 0  # sent with every request (the cache key includes it)


@dataclass(kw_only=True)
class SeqKDCfg:
    steps: int = -1  # -1 -> same student-update budget as warmup + gad
    lr: float = 3e-3
    # plan=compare's SeqKD arm (SFT continued from the warmup-end student, constant lr): the baseline at
    # its best of 3e-4 (where warmup's cosine ends) / 1e-4 / 5e-5 on 3 seeds (docs/gad_verdict.md: 3e-4
    # lost 0.02-0.05 greedy validity to 1e-4 on every seed and split); -1 = warmup's end lr
    arm_lr: float = 1e-4


@dataclass(kw_only=True)
class WarmupCfg:
    steps: int = 540
    lr: float = 3e-3
    d_lr: float = -1.0  # -1: by discriminator.kind (d_lrs): 1e-3 score head, 5e-5 implicit (a whole LM)
    # G-only SFT steps before D starts; a from-scratch student's D is copied from G after them.
    # -1: 0 for a pretrained student; for a from-scratch one steps - 2 * d_only_steps (G learns
    # to talk, then d_only_steps of D alone, then as many of both). Starting D early and updating
    # it every 2nd step instead (d_every=2) kept it at chance: G improved faster than D could
    # follow (recipes/RESULTS_embedded.md).
    g_only_steps: int = -1
    d_only_steps: int = 20  # D alone (the paper: the first 10 steps), then both
    d_every: int = 1  # in the "both" phase, a D update (with its rollout) every d_every steps; G's SFT every step


@dataclass(kw_only=True)
class GadCfg:
    # The GRPO stage of every arm, sized with the oracle reward on the embedded default
    # (recipes/RESULTS_embedded.md, "o1": 40 steps of 16 prompts x 8 samples at lr 5e-4 beat SeqKD at its
    # best temperature on 3 of 3 seeds; 30 steps of 8 x 4 at lr 2e-4 moved nothing)
    steps: int = 40
    lr: float = 5e-4
    d_lr: float = -1.0  # -1: by discriminator.kind, as warmup.d_lr
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float = 3.0
    kl_coef: float = 0.001
    d_acc_gate: float = 0.65  # held-out pairwise accuracy D must reach before policy updates
    d_gate_steps: int = 20  # extra D-only steps allowed to reach the gate before giving up
    # "fixed": D's held-out accuracy (one sample per held-out prompt) >= d_acc_gate. "ceiling"
    # (gadx/train/gate.py): gate_samples samples per held-out prompt, ties 1/2, and the gate opens
    # when the lower confidence bound (z = gate_z) closes gate_frac of the gap 0.5 -> acc*, on at
    # least gate_min_pairs pairs; acc* from the embedded world's exact teacher (else d_acc_gate).
    # The "D fell back to chance" warning follows the same mode (a fixed 0.55, or 20% of the gap).
    gate: str = "fixed"
    gate_frac: float = 0.5
    gate_z: float = 1.645
    gate_min_pairs: int = 256
    gate_samples: int = 4
    freeze_discriminator: bool = False  # the paper's off-policy ablation (reward hacking)
    # policy updates per rollout on the same samples and old log-probs (verl's ppo_epochs, TRL's
    # num_iterations); the paper uses 1. Above 1 the ratio moves off 1 and the clip acts.
    policy_epochs: int = 1
    # "discriminator" (GAD), or "oracle": the embedded world's exact teacher log-likelihood per
    # token (gadx/train/oracle.py), the ceiling any D could give; a diagnostic arm, not black-box
    reward: str = "discriminator"
    oracle_floor: float = -20.0  # the oracle reward per token of a reply the teacher cannot write
    # reward="oracle" on real data: the teacher's HF folder (its weights: a diagnostic ceiling arm,
    # gadx/train/lm_oracle.py), scoring the student's token ids, so it must share the student's tokenizer
    oracle_model: str = ""
    # D's score over the sample's length (tokens, EOS included) before the advantages. The implicit D's score
    # is a log-ratio summed over the reply; when its per-token terms are negative on the student's samples
    # (as D learns they should be), the sum rewards a shorter reply whatever it says: on SmolLM2 GAD cut
    # its replies from 127 to 2-5 tokens in 30 steps (docs/real_llm.md). SimPO's length-normalised reward
    # for the same bias. D's own Bradley-Terry loss still compares sums
    reward_per_token: bool = False
    lr_warmup: int = 0  # GAD steps of a linear lr ramp to gad.lr (0: constant from the first step, the paper's)
    adv_norm: str = "group"  # GRPO advantage normaliser: "group" std (the paper), "batch" std, "none" (losses.py)


@dataclass(kw_only=True)
class StagesCfg:
    seqkd: SeqKDCfg = field(default_factory=SeqKDCfg)
    warmup: WarmupCfg = field(default_factory=WarmupCfg)
    gad: GadCfg = field(default_factory=GadCfg)
    prompts_per_step: int = 16  # global, over all data-parallel ranks
    # prompts per step of the warmup stage and of SeqKD's first warmup.steps - d_only_steps steps
    # (the matching SFT updates; a from-scratch student needs many examples); 0 = prompts_per_step
    sft_prompts_per_step: int = 64
    n_samples: int = 8
    # prompts per rollout call, each call seeded by its first prompt's global index: samples are the
    # same at every DP size whose per-rank share it divides. 0: one call per rank (fastest; samples
    # then depend on the DP size)
    rollout_prompts_per_call: int = 0
    temperature: float = 0.8
    max_prompt_len: int = 48
    max_response_len: int = 48
    grad_clip: float = 0.2
    weight_decay: float = 0.01
    # The student's lr over the SFT stages (seqkd, warmup): linear warmup over sft_lr_warmup steps,
    # then "cosine" decay to sft_lr_min_ratio x lr at the stage's last step, or "constant".
    # GAD keeps a constant lr, as in the paper.
    sft_lr_schedule: str = "cosine"
    sft_lr_warmup: int = 20
    sft_lr_min_ratio: float = 0.1
    length_drift: float = 1.5  # warn when student responses exceed this multiple of the teacher's


@dataclass(kw_only=True)
class ParallelCfg:
    tp: int = 1
    pp: int = 1
    # token budget of one packed micro-batch; small on CPU, where packed attention is a dense [T, T]
    # masked SDPA (cost grows with T^2); raise it on a GPU
    micro_batch_tokens: int = 1024  # holds a discriminator group: (8 samples + the teacher reply) x (48 + 48)
    # Rollouts under TP: "gathered" (all-gather the student, every rank samples the whole model;
    # layout-independent samples) or "sharded" (gadx.sampler.TPKVCacheSampler decodes on each
    # rank's shard and samples vocab-parallel: no full copy, no [B, V] gather; needs pp=1)
    rollout: str = "gathered"
    # megatron sequence parallelism with TP > 1 (activations outside the TP regions split along the
    # sequence over the TP ranks; no effect at tp=1). Micro-batches are padded to a multiple of tp;
    # under pp > 1, micro_batch_tokens must be one
    sequence_parallel: bool = False
    # DDP gradient reduce-scatter overlapped with backward: "auto" (on with CUDA), "on", "off"
    overlap_grad_reduce: str = "auto"
    # The rollout sampler's decode step (gadx.sampler.compiled): "on" (torch.compile'd: fused C++ on CPU,
    # CUDA graphs on a GPU; compiles once per batch/length bucket), "off" (eager), "auto" (on for CUDA,
    # eager on CPU, where compiling costs minutes a shape). TP-sharded rollouts stay eager.
    rollout_compile: str = "auto"


@dataclass(kw_only=True)
class RunCfg:
    out_dir: str = "runs/embedded"
    # "compare": warmup (+ the gate) once, then every arm of ``arms`` from the same warmup-end student
    # (gadx/train/run.py); "gad": one warmup + gate + GAD run; "seqkd": one SFT run from scratch
    plan: str = "compare"
    # plan=compare's arms, comma-separated: "seqkd" (SFT continued for gad.steps steps on the same
    # prompts), "gad" (the discriminator's reward; skipped when the gate fails), "oracle" (reward =
    # the exact teacher log-likelihood per token, D frozen: the embedded world only), "frozen" (GAD
    # with D frozen after the gate: the off-policy control). "auto": seqkd,gad,oracle on the
    # embedded world, seqkd,gad on a data file
    arms: str = "auto"
    seed: int = 0
    seeds: int = 1  # >1: run seeds seed..seed+seeds-1 and aggregate the table
    log_every: int = 1
    checkpoint_every: int = 0  # also save every this many steps (0 = off)
    # save when this many minutes have passed since the last save (0 = off), besides stage ends and
    # checkpoint_every: bounds the work a kill loses whatever a step costs (0.1 s on CPU, minutes with
    # a slow teacher), which a step count cannot
    checkpoint_minutes: float = 5.0
    eval_every: int = 20  # cadence (steps) of D's held-out accuracy and gadx.eval.evaluate_small; 0 = never
    eval_suites: str = ""  # comma-separated gadx.eval suites for evaluate_small (e.g. "vicuna"); the world's test_id when embedded
    eval_limit: int = 16  # prompts per suite in evaluate_small
    eval_size: int = 64  # prompts per split in the final table (the first of test_id and test_ood)
    eval_samples: int = 4  # samples per prompt at T = 1.0, 0.8 and 0.6 in the final table (greedy: one)
    # validation prompts per split (the last of test_id and test_ood, disjoint from the eval_size
    # first) on which each student's best temperature is chosen; 0: chosen on the test prompts
    eval_val_size: int = 32
    max_nonfinite: int = 5
    max_steps: int = 0  # stop after this many steps of the whole run (0 = no limit); for tests
    tensorboard: bool = True
    wandb: bool = False
    progress: bool = True


@dataclass(kw_only=True)
class TrainConfig:
    model: ModelCfg = field(default_factory=ModelCfg)
    discriminator: DiscriminatorCfg = field(default_factory=DiscriminatorCfg)
    data: DataCfg = field(default_factory=DataCfg)
    teacher: TeacherCfg = field(default_factory=TeacherCfg)
    stages: StagesCfg = field(default_factory=StagesCfg)
    parallel: ParallelCfg = field(default_factory=ParallelCfg)
    run: RunCfg = field(default_factory=RunCfg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def seqkd_steps(self) -> int:
        """SeqKD's step count: by default the student-update budget of warmup + GAD."""
        s = self.stages
        if s.seqkd.steps >= 0:
            return s.seqkd.steps
        return max(s.warmup.steps - s.warmup.d_only_steps, 0) + s.gad.steps


# ---- parsing -------------------------------------------------------------------------------


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Parse ``value`` (a string from --set, or a TOML value) as the field type ``typ``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(key, value, args[0])
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{key}: expected a bool, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected {typ.__name__}, got {value!r}")
        try:
            out = typ(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected {typ.__name__}, got {value!r}") from None
        if typ is int and isinstance(value, float) and value != out:
            raise ValueError(f"{key}: expected int, got {value!r}")
        return out
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {typ} for {key}")


def _set(cfg: TrainConfig, dotted: str, value: Any) -> None:
    obj: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        types_ = _field_types(obj)
        if part not in types_:
            prefix = ".".join(parts[:i]) or "<top>"
            raise ValueError(f"unknown config key {dotted!r} ({part!r} is not one of {prefix}: {sorted(types_)})")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(obj, part)):
                raise ValueError(f"config key {dotted!r} is a section; set one of its fields")
            setattr(obj, part, _coerce(dotted, value, types_[part]))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ValueError(f"unknown config key {dotted!r} ({part!r} is not a section)")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _flatten(v, key + ".") if isinstance(v, dict) else [(key, v)]
    return out


def apply_file(cfg: TrainConfig, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: bad TOML ({e})") from None
    for key, value in _flatten(data):
        _set(cfg, key, value)


def apply_override(cfg: TrainConfig, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key.sub=value, got {assignment!r}")
    _set(cfg, key.strip(), value.strip())


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from ``to_dict`` output (a checkpoint's config.json)."""
    cfg = TrainConfig()
    for key, value in _flatten(d):
        _set(cfg, key, value)
    return cfg


# D's learning rate by kind where warmup.d_lr / gad.d_lr is -1: a fresh scalar head at 1e-3; the
# implicit D is a whole language model: 5e-5 (tools/d_curve.py, batch 32: held-out 0.756 / 0.846 after
# 1,024 / 4,000 pairs against 0.768 / 0.803 at 3e-4; at 3e-4 its LM samples worse than the student it
# starts from, and GAD's student follows it there: docs/gad_verdict.md)
D_LR = {"score": 1e-3, "implicit": 5e-5}


def d_lrs(cfg: TrainConfig) -> tuple[float, float]:
    """(warmup D lr, GAD D lr), the -1 defaults resolved by discriminator.kind."""
    auto = D_LR[cfg.discriminator.kind]
    s = cfg.stages
    return (auto if s.warmup.d_lr == -1 else s.warmup.d_lr), (auto if s.gad.d_lr == -1 else s.gad.d_lr)


ARMS = ("seqkd", "gad", "oracle", "frozen")


def run_arms(cfg: TrainConfig) -> list[str]:
    """plan=compare's arms in the order of ``ARMS`` (ValueError on an unknown or empty list; "auto" above)."""
    if cfg.run.arms == "auto":
        return ["seqkd", "gad", "oracle"] if cfg.data.train == EMBEDDED else ["seqkd", "gad"]
    names = [a.strip() for a in cfg.run.arms.split(",") if a.strip()]
    bad = [a for a in names if a not in ARMS]
    if bad or not names:
        raise ValueError(f"run.arms must list some of {','.join(ARMS)}, got {cfg.run.arms!r}")
    return [a for a in ARMS if a in names]


def d_group_tokens(s: StagesCfg) -> int:
    """The least micro-batch budget D needs: a prompt's teacher reply and its n_samples samples
    are packed into one micro-batch, each up to max_prompt_len + max_response_len tokens."""
    return (s.n_samples + 1) * (s.max_prompt_len + s.max_response_len)


def validate(cfg: TrainConfig) -> None:
    """Checks that need no model or network; one-line ValueErrors."""
    from .config_checks import check_ranges

    check_ranges(cfg)  # every numeric key first: later checks divide by some of them
    s, p, r = cfg.stages, cfg.parallel, cfg.run
    if r.plan not in ("compare", "gad", "seqkd"):
        raise ValueError(f"run.plan must be compare, gad or seqkd, got {r.plan!r}")
    if r.plan == "compare":
        arms = run_arms(cfg)
        if s.gad.steps < 1:
            raise ValueError(f"run.plan=compare runs every arm for stages.gad.steps student updates: it must be >= 1, got {s.gad.steps}")
        if "oracle" in arms and cfg.data.train != EMBEDDED and not s.gad.oracle_model:
            raise ValueError(f"run.arms={r.arms!r}: the oracle arm needs the embedded world (data.train='embedded') "
                             "or stages.gad.oracle_model (the teacher's HF folder)")
    for name in ("tp", "pp", "micro_batch_tokens"):
        if getattr(p, name) < 1:
            raise ValueError(f"parallel.{name} must be >= 1, got {getattr(p, name)}")
    if s.sft_prompts_per_step < 0:
        raise ValueError(f"stages.sft_prompts_per_step must be >= 0, got {s.sft_prompts_per_step}")
    if s.sft_prompts_per_step > s.prompts_per_step and s.sft_prompts_per_step % s.prompts_per_step:
        raise ValueError(f"stages.sft_prompts_per_step={s.sft_prompts_per_step} must be a multiple of "
                         f"stages.prompts_per_step={s.prompts_per_step} (D's warmup batch is every k-th SFT prompt)")
    if s.prompts_per_step < 1 or s.n_samples < 1:
        raise ValueError(f"stages.prompts_per_step and stages.n_samples must be >= 1, got {s.prompts_per_step}, {s.n_samples}")
    if s.n_samples < 2 and r.plan != "seqkd":
        raise ValueError(f"stages.n_samples must be >= 2 for group-normalised advantages, got {s.n_samples}")
    if s.max_prompt_len + s.max_response_len > p.micro_batch_tokens:
        raise ValueError(
            f"parallel.micro_batch_tokens={p.micro_batch_tokens} cannot hold one sequence of "
            f"max_prompt_len + max_response_len = {s.max_prompt_len + s.max_response_len}"
        )
    group = d_group_tokens(s)
    if r.plan != "seqkd" and group > p.micro_batch_tokens:
        # D's Bradley-Terry loss needs a prompt's teacher reply and its samples in one micro-batch
        raise ValueError(
            f"parallel.micro_batch_tokens={p.micro_batch_tokens} cannot hold a discriminator group of "
            f"(n_samples + 1) x (max_prompt_len + max_response_len) = {group} tokens (a prompt's teacher reply "
            f"and its {s.n_samples} samples are packed together): raise it to >= {group}"
        )
    if not 0 <= s.warmup.d_only_steps <= s.warmup.steps:
        raise ValueError(f"stages.warmup.d_only_steps={s.warmup.d_only_steps} must be in [0, warmup.steps={s.warmup.steps}]")
    if s.warmup.g_only_steps > s.warmup.steps - s.warmup.d_only_steps:
        raise ValueError(f"stages.warmup.g_only_steps={s.warmup.g_only_steps} leaves no room for the "
                         f"{s.warmup.d_only_steps} D-only steps in warmup.steps={s.warmup.steps}")
    if s.warmup.d_every < 1:
        raise ValueError(f"stages.warmup.d_every must be >= 1, got {s.warmup.d_every}")
    if s.rollout_prompts_per_call < 0:
        raise ValueError(f"stages.rollout_prompts_per_call must be >= 0, got {s.rollout_prompts_per_call}")
    if not 0.0 <= s.gad.d_acc_gate < 1.0:
        raise ValueError(f"stages.gad.d_acc_gate must be in [0, 1), got {s.gad.d_acc_gate}")
    if s.gad.reward not in ("discriminator", "oracle"):
        raise ValueError(f"stages.gad.reward must be discriminator or oracle, got {s.gad.reward!r}")
    if s.gad.reward == "oracle" and cfg.data.train != EMBEDDED and not s.gad.oracle_model:
        raise ValueError("stages.gad.reward='oracle' needs the embedded world (data.train='embedded'), whose teacher is "
                         "known exactly, or stages.gad.oracle_model (the teacher's HF folder)")
    if s.gad.reward_per_token and s.gad.reward == "oracle":
        raise ValueError("stages.gad.reward_per_token divides D's score by the length; the oracle reward is per token already")
    if s.gad.oracle_model and cfg.data.train == EMBEDDED:
        raise ValueError(f"stages.gad.oracle_model={s.gad.oracle_model!r}: the embedded world's oracle is exact; "
                         "oracle_model is for real data")
    if cfg.discriminator.kind not in D_LR:
        raise ValueError(f"discriminator.kind must be score or implicit, got {cfg.discriminator.kind!r}")
    if not cfg.discriminator.beta > 0:
        raise ValueError(f"discriminator.beta must be > 0, got {cfg.discriminator.beta}")
    for name, v in (("warmup", s.warmup.d_lr), ("gad", s.gad.d_lr)):
        if v < 0 and v != -1:
            raise ValueError(f"stages.{name}.d_lr must be >= 0, or -1 (by discriminator.kind), got {v}")
    if not (s.seqkd.arm_lr > 0 or s.seqkd.arm_lr == -1):
        raise ValueError(f"stages.seqkd.arm_lr must be > 0, or -1 (where warmup's schedule ends), got {s.seqkd.arm_lr}")
    if s.gad.gate not in ("fixed", "ceiling"):
        raise ValueError(f"stages.gad.gate must be fixed or ceiling, got {s.gad.gate!r}")
    if s.gad.adv_norm not in ("group", "batch", "none"):
        raise ValueError(f"stages.gad.adv_norm must be group, batch or none, got {s.gad.adv_norm!r}")
    if not cfg.teacher.base_url and not cfg.teacher.replies_file:
        raise ValueError("teacher.base_url is empty: give an OpenAI-compatible URL, 'embedded', or teacher.replies_file")
    if cfg.model.student == EMBEDDED and cfg.data.train != EMBEDDED and not cfg.model.tokenizer:
        raise ValueError("model.student='embedded' with a data file needs model.tokenizer (the embedded tokenizer is trained on the synthetic world)")
    m = cfg.model
    if m.student == EMBEDDED and (m.num_heads % p.tp or m.num_kv_heads % p.tp):
        raise ValueError(f"parallel.tp={p.tp} does not divide model.num_heads={m.num_heads} and model.num_kv_heads={m.num_kv_heads}")
    if r.seeds < 1:
        raise ValueError(f"run.seeds must be >= 1, got {r.seeds}")
    if s.sft_lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"stages.sft_lr_schedule must be cosine or constant, got {s.sft_lr_schedule!r}")
    if s.sft_lr_warmup < 0 or not 0.0 <= s.sft_lr_min_ratio <= 1.0:
        raise ValueError(f"stages.sft_lr_warmup must be >= 0 and sft_lr_min_ratio in [0, 1], "
                         f"got {s.sft_lr_warmup}, {s.sft_lr_min_ratio}")
    if p.rollout not in ("gathered", "sharded"):
        raise ValueError(f"parallel.rollout must be gathered or sharded, got {p.rollout!r}")
    if p.rollout_compile not in ("auto", "on", "off"):
        raise ValueError(f"parallel.rollout_compile must be auto, on or off, got {p.rollout_compile!r}")
    if p.rollout == "sharded" and p.pp > 1:
        raise ValueError(f"parallel.rollout=sharded runs on the TP shards of one pipeline stage; got parallel.pp={p.pp}")
    if m.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {m.dtype!r}")
    if m.fp8 and not m.use_te:
        raise ValueError(f"model.fp8={m.fp8!r} needs model.use_te=true (FP8 runs through Transformer Engine layers)")
    _check_perf(cfg)


def _check_perf(cfg: TrainConfig) -> None:
    from gadx.models.perf import RECOMPUTE, RECOMPUTE_METHODS, SWITCHES, token_multiple

    m, p = cfg.model, cfg.parallel
    for key, value, allowed in (("model.recompute", m.recompute, RECOMPUTE),
                                ("model.recompute_method", m.recompute_method, RECOMPUTE_METHODS),
                                ("model.fusions", m.fusions, SWITCHES),
                                ("parallel.overlap_grad_reduce", p.overlap_grad_reduce, SWITCHES)):
        if value not in allowed:
            raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")
    if m.recompute_num_layers < 1:
        raise ValueError(f"model.recompute_num_layers must be >= 1, got {m.recompute_num_layers}")
    multiple = token_multiple(tp=p.tp, sequence_parallel=p.sequence_parallel, fp8=bool(m.fp8))
    if p.pp > 1 and p.micro_batch_tokens % multiple:
        # PP sends fixed [T/TP, B, H] activations: the budget itself must split evenly (no padding)
        raise ValueError(f"parallel.micro_batch_tokens={p.micro_batch_tokens} must be a multiple of {multiple} "
                         f"under pipeline parallelism with parallel.tp={p.tp}, sequence_parallel={p.sequence_parallel}, "
                         f"model.fp8={m.fp8!r}")


def perf_config(cfg: TrainConfig):
    """The model-side levers of ``cfg`` as a gadx.models.perf.PerfConfig (for build_model)."""
    from gadx.models.perf import PerfConfig

    m, p = cfg.model, cfg.parallel
    return PerfConfig(recompute=m.recompute, recompute_method=m.recompute_method,
                      recompute_num_layers=m.recompute_num_layers, sequence_parallel=p.sequence_parallel,
                      fusions=m.fusions, overlap_grad_reduce=p.overlap_grad_reduce)


def sft_lr(s: StagesCfg, base: float, step: int, total: int) -> float:
    """The student's lr at ``step`` of an SFT stage of ``total`` steps (stages.sft_lr_*)."""
    if s.sft_lr_schedule == "constant":
        return base
    if step < s.sft_lr_warmup:
        return base * (step + 1) / s.sft_lr_warmup
    span = max(total - s.sft_lr_warmup - 1, 1)
    frac = min((step - s.sft_lr_warmup) / span, 1.0)
    return base * (s.sft_lr_min_ratio + (1 - s.sft_lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def check_divisible(cfg: TrainConfig, dp: int) -> None:
    s = cfg.stages
    if s.sft_prompts_per_step % dp:
        raise ValueError(f"stages.sft_prompts_per_step={s.sft_prompts_per_step} is not divisible by the data-parallel size {dp}")
    if s.prompts_per_step % dp:
        raise ValueError(f"stages.prompts_per_step={s.prompts_per_step} is not divisible by the data-parallel size {dp}")
    if s.rollout_prompts_per_call and (s.prompts_per_step // dp) % s.rollout_prompts_per_call:
        raise ValueError(f"stages.rollout_prompts_per_call={s.rollout_prompts_per_call} does not divide the "
                         f"{s.prompts_per_step // dp} prompts per data-parallel rank")


def load_config(argv: list[str]) -> tuple[TrainConfig, list[str]]:
    """Parse ``--config FILE`` and repeated ``--set k=v``; returns (config, remaining args)."""
    cfg = TrainConfig()
    rest: list[str] = []
    files: list[str] = []
    sets: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("--config", "--set"):
            value = next(it, None)
            if value is None:
                raise ValueError(f"{arg} needs a value")
            (files if arg == "--config" else sets).append(value)
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg.startswith("--set="):
            sets.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    for f in files:
        apply_file(cfg, f)
    for s in sets:
        apply_override(cfg, s)
    validate(cfg)
    return cfg, rest
