"""The embedded default's final table: before / SeqKD (best T) / GAD / oracle / frozen D / teacher, ID and OOD.

    ev = evaluate_student(env, model, "SeqKD")   # gadx/train/verdict.py's metrics on test (+ validation) prompts
    ev_t = evaluate_teacher(env)
    text = write_results(out_dir, per_seed, summaries)   # results.md / results.json; returns the table

Test prompts: the first ``run.eval_size`` of test_id (ID) and test_ood (OOD). Each student's best
temperature (validity among 1.0 / 0.8 / 0.6 / greedy) is chosen on the last ``run.eval_val_size``
prompts of each split (disjoint from the test prompts), or on the test prompts themselves when
that is 0 (the table then says so). The paired comparison: per prompt, an arm's validity at its
best temperature minus SeqKD's at its own, with a bootstrap 95% interval, per seed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gadx.eval.table import table

from . import verdict as vd

LABELS = {"before": "before", "seqkd": "SeqKD", "gad": "GAD", "oracle": "oracle (GRPO on exact log T)",
          "frozen": "frozen D", "teacher": "teacher"}
ROW_ORDER = ("before", "seqkd", "gad", "oracle", "frozen", "teacher")
SPLITS = ("test_id", "test_ood")


def eval_prompts(world, n: int, n_val: int) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """{split: prompt texts} for the test prompts and the validation prompts (None when n_val = 0)."""
    test, val = {}, {}
    for split in SPLITS:
        exs = world.split(split)
        if n + n_val > len(exs):
            raise ValueError(f"run.eval_size={n} + run.eval_val_size={n_val} exceed the {len(exs)} prompts of {split}")
        test[split] = [ex.prompt for ex in exs[:n]]
        val[split] = [ex.prompt for ex in exs[len(exs) - n_val:]] if n_val else []
    return test, (val if n_val else None)


def evaluate_student(env, model, desc: str) -> dict[str, Any]:
    """{"test": metrics, "val": metrics | None, "best_T": {split: T}, "best_T_on": "validation" | "test"}.
    Collective (every rank: the weights are gathered; data-parallel ranks share the prompts)."""
    from .metrics import Progress

    r = env.cfg.run
    test, val = eval_prompts(env.world, r.eval_size, r.eval_val_size)
    sd = {k: v.detach().to("cpu") for k, v in env.engine_weights(model).items()}
    dims = env.dims
    n_units = len(SPLITS) * (len(vd.TEMPS) + 1) + (len(SPLITS) * len(vd.TEMPS) if val else 0)
    bar = Progress(n_units, f"eval {desc}", enabled=dims.rank == 0 and r.progress)
    kw = dict(k=r.eval_samples, max_prompt_len=env.cfg.stages.max_prompt_len, max_new=env.cfg.stages.max_response_len,
              share=(dims.dp_rank, dims.dp), group=dims.dp_group if dims.dp > 1 else None, progress=bar.update)
    out: dict[str, Any] = {"test": vd.evaluate_model(env.world, env.tok, env.engine, sd, env.model_cfg, test, **kw)}
    out["val"] = vd.evaluate_model(env.world, env.tok, env.engine, sd, env.model_cfg, val, kl=False, seed=4321, **kw) \
        if val else None
    pick = out["val"] or out["test"]
    out["best_T"] = {s: vd.best_temperature(pick[s]) for s in SPLITS}
    out["best_T_on"] = "validation" if val else "test"
    return out


def evaluate_teacher(env) -> dict[str, Any]:
    test, _ = eval_prompts(env.world, env.cfg.run.eval_size, 0)
    return {"test": vd.evaluate_teacher(env.world, test, env.tok), "val": None,
            "best_T": {s: 1.0 for s in SPLITS}, "best_T_on": "test"}


# ---- the table --------------------------------------------------------------------------------


def row_numbers(ev: dict[str, Any], split: str) -> dict[str, float]:
    """The table's numbers of one model on one split."""
    sp, t = ev["test"][split], ev["best_T"][split]
    return {"valid_t1": sp["1.0"]["valid"], "valid_greedy": sp["0.0"]["valid"], "valid_best": sp[str(t)]["valid"],
            "best_T": t, "task_greedy": sp["0.0"]["task"], "logT_tok": sp["1.0"]["logT_tok"],
            "kl_ts": sp["kl_ts"], "len": sp["1.0"]["len"]}


def paired(per_seed: list[dict[str, Any]], arm: str, base: str = "seqkd", metric: str = "per_prompt_valid") -> dict:
    """Per seed and split: arm at its best T minus ``base`` at its best T, per prompt, with the bootstrap."""
    out: dict[str, list] = {s: [] for s in SPLITS}
    for rec in per_seed:
        rows = rec["rows"]
        if arm not in rows or base not in rows:
            continue
        for s in SPLITS:
            a = rows[base]["test"][s][str(rows[base]["best_T"][s])][metric]
            b = rows[arm]["test"][s][str(rows[arm]["best_T"][s])][metric]
            out[s].append((rec["seed"], *vd.paired_bootstrap(a, b, seed=rec["seed"])))
    return out


def _temp(t: float) -> str:
    return "greedy" if t == 0 else f"T={t:g}"


def _cell(xs: list[float], fmt: str = ".3f") -> str:
    m, sd = vd.mean_std(xs)
    if not math.isfinite(m):
        return "-inf"
    return f"{m:{fmt}}" if len(xs) == 1 else f"{m:{fmt}} ± {sd:{fmt}}"


def format_results(per_seed: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> str:
    """The markdown of results.md: the main table, the paired differences, compute, the gate."""
    names = [r for r in ROW_ORDER if any(r in rec["rows"] for rec in per_seed)]  # an arm skipped on some seeds too
    on = per_seed[0]["rows"]["before" if "before" in per_seed[0]["rows"] else names[0]]["best_T_on"] if names else "validation"
    head = ["model", "split", "valid T=1", "valid greedy", "valid at best T", "task acc (greedy)",
            "teacher logp/token (T=1, floored)", "KL(teacher‖student)/token", "length (T=1)"]
    rows = []
    for name in names:
        for s in SPLITS:
            nums = [row_numbers(rec["rows"][name], s) for rec in per_seed if name in rec["rows"]]
            temps = "/".join(_temp(x["best_T"]) for x in nums)
            label = LABELS[name] + (f" (best T: {temps})" if name == "seqkd" else "") \
                + (f" ({len(nums)} of {len(per_seed)} seeds)" if len(nums) < len(per_seed) else "")
            best = _cell([x["valid_best"] for x in nums]) + ("" if name in ("seqkd", "teacher") else f" ({temps})")
            rows.append([label, s.replace("test_", "").upper(), _cell([x["valid_t1"] for x in nums]),
                         _cell([x["valid_greedy"] for x in nums]), best, _cell([x["task_greedy"] for x in nums]),
                         _cell([x["logT_tok"] for x in nums], ".2f"), _cell([x["kl_ts"] for x in nums]),
                         _cell([x["len"] for x in nums], ".1f")])
    lines = table(head, rows)
    n_test = len(next(iter(per_seed[0]["rows"].values()))["test"]["test_id"]["1.0"]["per_prompt_valid"]) if names else 0
    lines.append("")
    lines.append(f"{len(per_seed)} seed(s){' (mean ± std)' if len(per_seed) > 1 else ''}, {n_test} prompts per split. "
                 "valid: share of samples the teacher could write (exact). Best temperature chosen per student and "
                 + ("split on held-out validation prompts (the last of each test split)." if on == "validation"
                    else "split ON THE TEST PROMPTS (run.eval_val_size=0): optimistic for every row."))
    arms = [a for a in ("gad", "oracle", "frozen") if any(a in rec["rows"] for rec in per_seed)]
    if "seqkd" in names and arms:
        seeds = [rec["seed"] for rec in per_seed]
        head2 = ["arm minus SeqKD (valid, each at its best T)", "split", *[f"seed {s}" for s in seeds], "mean", "seeds > 0"]
        rows2 = []
        for arm in arms:
            pr = paired(per_seed, arm)
            for s in SPLITS:
                by_seed = {x[0]: x for x in pr[s]}
                cells = [f"{by_seed[sd][1]:+.3f} [{by_seed[sd][2]:+.3f}, {by_seed[sd][3]:+.3f}]" if sd in by_seed
                         else "skipped" for sd in seeds]
                ds = [x[1] for x in pr[s]]
                rows2.append([LABELS[arm], s.replace("test_", "").upper(), *cells,
                              f"{sum(ds) / len(ds):+.3f}" if ds else "n/a",
                              f"{sum(d > 0 for d in ds)} of {len(seeds)}"])
        lines += ["", *table(head2, rows2), "",
                  "Paired per prompt, bootstrap 95% interval over prompts (2000 resamples)."]
    if "seqkd" in names and arms:  # (wall seconds vary from run to run: only beside a comparison)
        lines += ["", compute_line(summaries)]
    gate = [r for r in summaries if r["run"] == "warmup"] or [r for r in summaries if r["run"] == "gad"]
    if gate:
        def acc(key):
            vals = [r.get(key) for r in gate if r.get(key) is not None]
            return " / ".join(f"{v:.3f}" for v in vals) or "n/a"
        lines.append(f"D's held-out pairwise accuracy at the gate, per seed: {acc('d_acc_heldout_end')}; "
                     f"GAD skipped by the gate: {sum(bool(r['gad_skipped']) for r in gate)} of {len(gate)}")
    return "\n".join(lines)


def compute_line(summaries: list[dict[str, Any]]) -> str:
    """Seconds per student step of each arm (mean over seeds): GAD's extra compute beside SeqKD's."""
    per: dict[str, list[float]] = {}
    for r in summaries:
        if r.get("step_s") is not None and r["run"] != "warmup":
            per.setdefault(r["run"], []).append(r["step_s"])
    if not per:
        return "Compute: n/a"
    base = sum(per["seqkd"]) / len(per["seqkd"]) if per.get("seqkd") else None
    parts = []
    for name in ("seqkd", "gad", "oracle", "frozen"):
        if name in per:
            s = sum(per[name]) / len(per[name])
            parts.append(f"{LABELS[name]} {s:.2f} s" + (f" (x{s / base:.1f})" if base and name != "seqkd" else ""))
    return "Compute per student step (wall seconds, mean over seeds; load-dependent): " + ", ".join(parts)


def write_results(out_dir: Path, per_seed: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> str:
    text = format_results(per_seed, summaries)
    (out_dir / "results.json").write_text(json.dumps({"per_seed": per_seed, "runs": summaries}, indent=1))
    (out_dir / "results.md").write_text(text + "\n")
    return text
