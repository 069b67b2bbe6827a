"""The run directory's own config: written at the top when a run starts, compared when one resumes.

    prepare_run_dir(cfg, mode="check")   # before anything else writes into cfg.run.out_dir

``<run.out_dir>/config.json`` holds the resolved config of the run that owns the folder. A
re-run with another config would otherwise resume the old checkpoints under the new settings,
re-export the model and rewrite the results as if nothing had changed; instead it stops with
the differences, unless ``mode`` is ``"resume-anyway"`` (continue from the checkpoints with the
new config, which then becomes the folder's) or ``"overwrite"`` (delete the run's outputs and
start again; teacher caches are kept: their replies were paid for and are keyed by request).
Settings that do not change what is computed may differ freely (``RESUMABLE``): the layout
(checkpoints are layout-free), step limits, logging, save cadence, client concurrency.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import TrainConfig, _flatten

CONFIG_FILE = "config.json"
MODES = ("check", "resume-anyway", "overwrite")
RESUMABLE = frozenset({
    "run.out_dir", "run.max_steps", "run.progress", "run.tensorboard", "run.wandb", "run.checkpoint_every",
    "run.checkpoint_minutes", "parallel.tp", "parallel.pp", "parallel.micro_batch_tokens", "parallel.rollout",
    "teacher.max_in_flight", "teacher.prefetch_depth", "teacher.api_key_env", "teacher.cache_path", "teacher.max_usd",
})
_KEEP = ("teacher_cache",)  # file-name prefixes --overwrite keeps


def config_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every setting that differs, except ``RESUMABLE`` ones."""
    a, b = dict(_flatten(saved)), dict(_flatten(now))
    missing = "(absent)"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if k not in RESUMABLE and a.get(k, missing) != b.get(k, missing)]


def _is_run_dir(out: Path) -> bool:
    return (out / CONFIG_FILE).is_file() or any((out / n).is_dir() for n in ("seqkd", "gad", "tokenizer")) \
        or any(out.glob("seed*/"))


def _remove_outputs(folder: Path) -> None:
    """Everything under ``folder`` except teacher caches (and the folders that hold them)."""
    for p in folder.iterdir():
        if p.name.startswith(_KEEP):
            continue
        if p.is_dir() and not p.is_symlink():
            _remove_outputs(p)
            if not any(p.iterdir()):
                p.rmdir()
        else:
            p.unlink()


def prepare_run_dir(cfg: TrainConfig, mode: str = "check", *, rank: int = 0) -> None:
    """Check ``cfg`` against the folder's config (ValueError listing the differences; every rank
    reads it), then, on rank 0, apply ``mode`` and write the config."""
    if mode not in MODES:
        raise ValueError(f"run directory mode must be one of {MODES}, got {mode!r}")
    out = Path(cfg.run.out_dir)
    path = out / CONFIG_FILE
    now = json.loads(cfg.to_json())
    text = cfg.to_json()
    if path.is_file() and mode == "check":
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); use --overwrite to start this run again") from None
        diff = config_diff(saved, now)
        if diff:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:12])
            more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
            raise ValueError(f"{out} holds a run with another config ({len(diff)} difference(s): {shown}{more}); "
                             "use another run.out_dir, or --resume-anyway to continue it with this config, "
                             "or --overwrite to start it again")
    if rank != 0:  # rank 0 alone changes the folder; the caller then waits at a barrier
        return
    if mode == "overwrite" and out.is_dir():
        if not _is_run_dir(out):
            raise ValueError(f"--overwrite: {out} does not look like a gadx run directory (no {CONFIG_FILE}, "
                             "seqkd/, gad/ or seed*/); delete it yourself if you mean it")
        _remove_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    tmp.replace(path)
