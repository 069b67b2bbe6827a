"""The embedded default's final table (like the paper's Table 2): before / SeqKD / GAD on ID and OOD prompts.

Greedy decoding of each student on the world's test splits; task accuracy and the
exact teacher log-likelihood per token (gadx.eval.diagnostics.world_metrics), the
phrasing distance to the teacher's own mix (world.teacher_phrasing_distance),
and response lengths; the teacher's own samples give the reference row.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from gadx.eval.diagnostics import world_metrics
from gadx.eval.table import table
from gadx.sampler.chunked import generate_in_chunks, release

from .sequences import encode_prompt

COLUMNS = ("task_accuracy", "teacher_possible", "teacher_logprob_per_token", "phrasing_distance", "len_tokens")


def _score(env, prompts: list[str], texts: list[str], n_tokens: list[int]) -> dict[str, float]:
    m = world_metrics(env.world, prompts, texts, n_tokens)
    return {
        "task_accuracy": m["task_accuracy"],
        "teacher_possible": 1.0 - m["teacher_impossible_frac"],
        "teacher_logprob_per_token": m["teacher_logprob_per_token"],
        "phrasing_distance": env.world.teacher_phrasing_distance(prompts, texts)["all"],
        "len_tokens": sum(n_tokens) / len(n_tokens),
    }


def evaluate_student(env, model, n: int) -> dict[str, dict[str, float]]:
    env.engine.load_weights(env.engine_weights(model))
    out = {}
    for split in ("test_id", "test_ood"):
        prompts = [ex.prompt for ex in env.world.split(split)[:n]]
        ids = [encode_prompt(env.tok, [{"role": "user", "content": p}], env.cfg.stages.max_prompt_len).ids for p in prompts]
        roll = generate_in_chunks(env.engine, ids, max_new_tokens=env.cfg.stages.max_response_len, temperature=0.0,
                                  eos_ids=env.eos_ids)  # greedy, in chunks of the sampler's rollout batch
        texts = [env.tok.decode(r, skip_special_tokens=True) for r in roll.responses]
        out[split] = _score(env, prompts, texts, [len(r) for r in roll.responses])
    release(env.engine)
    return out


def evaluate_teacher(env, n: int) -> dict[str, dict[str, float]]:
    from .data import Sample

    out = {}
    for split in ("test_id", "test_ood"):
        prompts = [ex.prompt for ex in env.world.split(split)[:n]]
        texts = env.teacher_texts([Sample([{"role": "user", "content": p}]) for p in prompts])
        out[split] = _score(env, prompts, texts, [len(env.reply_ids(t)) for t in texts])
    return out


def aggregate(per_seed: list[dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """mean and (sample) std over seeds for every row / split / column."""
    rows = per_seed[0].keys()
    return {r: {s: {c: _mean_std([x[r][s][c] for x in per_seed]) for c in COLUMNS} for s in per_seed[0][r]} for r in rows}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    """-inf (a log-likelihood with no teacher-possible reply) propagates instead of crashing stdev."""
    if not all(math.isfinite(x) for x in xs):
        return float("-inf"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def format_table(agg) -> str:
    head = ["model", "split", "task acc", "teacher-possible replies", "teacher logp/token (of those)",
            "phrasing TV (lower better)", "length (tokens)"]
    rows = []
    for row, splits in agg.items():
        for split, cols in splits.items():
            cells = [f"{cols[c][0]:.3f} ± {cols[c][1]:.3f}" if c != "len_tokens" else f"{cols[c][0]:.1f} ± {cols[c][1]:.1f}" for c in COLUMNS]
            rows.append([row, split.replace("test_", "").upper(), *cells])
    return "\n".join(table(head, rows))


def write_results(out_dir: Path, per_seed: list, summaries: list) -> str:
    agg = aggregate(per_seed)
    table = format_table(agg)
    gad = [r for r in summaries if r["run"] == "gad"]
    if gad:
        def cell(key):
            vals = [r[key] for r in gad if r[key] is not None]
            return " / ".join(f"{v:.3f}" for v in vals) or "n/a"
        table += ("\n\nD's held-out pairwise accuracy (chance 0.5), per seed: at the start of GAD "
                  f"{cell('d_acc_heldout_gad_start')}; at the end {cell('d_acc_heldout_end')}; "
                  f"GAD skipped by the gate: {sum(r['gad_skipped'] for r in gad)} of {len(gad)}")
    (out_dir / "results.json").write_text(json.dumps({"per_seed": per_seed, "runs": summaries}, indent=2))
    (out_dir / "results.md").write_text(table + "\n")
    return table
