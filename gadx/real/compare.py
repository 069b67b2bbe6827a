"""GAD against SeqKD on the real run's evaluation, prompt by prompt, with paired bootstrap intervals.

    from gadx.real.compare import compare, d_check_verdict
    ok, why = d_check_verdict(json.load(open("RUN/d_check/d_check_implicit.json")))  # D clear of chance?
    c = compare(json.load(open("RUN/seed0/eval/results.json")), baseline="SeqKD")
    merged = merge_temperatures([greedy_results, sampled_results])  # models renamed NAME@greedy, NAME@T0.8
    c = compare(merged, baseline=best_model(merged, "SeqKD"))       # SeqKD at its best temperature

Per prompt set of gadx.real.evaluate's results (and "all": the sets pooled) and per model: the teacher's
log-likelihood per token (mean over prompts), distinct-2 (distinct token bigrams over bigrams, with the
tokenizer given, else word bigrams: repetition inflates log-likelihood, and "HHHH..." is one word but many tokens), the finished rate, ROUGE-L against the teacher, the mean length; and for every
model but the baseline and the teacher, its per-prompt difference from the baseline (model minus baseline)
with a bootstrap 95% interval over prompts (gadx.train.verdict.paired_bootstrap). An interval that holds
0 is "no difference".
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gadx.eval.diagnostics import tokenize
from gadx.train.verdict import paired_bootstrap

from .evaluate import SETS, TEACHER
from .text_metrics import distinct_n

# per-prompt values compared between models: name -> (record -> value)
PAIRED = {
    "teacher_ll_per_token": lambda r: r["teacher_ll_per_token"],
    "rougeL_vs_teacher": lambda r: r["rougeL_vs_teacher"],
    "finished": lambda r: float(r["finished"]),
}


def d_check_verdict(d: dict[str, Any], *, z: float = 2.0) -> tuple[bool, str]:
    """Is the D check's last held-out accuracy clear of chance (acc - z * se > 0.5)? And a line saying so."""
    curve = [c for c in d.get("curve", []) if c.get("pairs", 0) > 0]
    if not curve:
        return False, "the D check has no trained point"
    c = curve[-1]
    ok = c["acc"] - z * c["se"] > 0.5
    rho = c.get("rho_teacher_ll")
    line = (f"D check ({d.get('d_kind', '?')} D, {c['pairs']} training pairs): held-out accuracy {c['acc']:.3f} "
            f"± {c['se']:.3f} on {d.get('n_held_pairs', '?')} pairs, {'clear of' if ok else 'not clear of'} chance "
            f"(acc - {z:g} se {'>' if ok else '<='} 0.5)")
    return ok, line + (f"; Spearman(D, teacher LL/tok) {rho:.3f}" if rho is not None else "")


def _distinct2(text: str, split: Callable[[str], list] = tokenize) -> float:
    units = split(text)
    return distinct_n([units], 2) if len(units) >= 2 else math.nan


def _nanmean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def compare(results: dict[str, Any], *, baseline: str = "SeqKD", n_boot: int = 2000, seed: int = 0,
            split: Callable[[str], list] = tokenize) -> dict[str, Any]:
    """Metrics per (set, model) and paired differences against ``baseline``; see the module docstring.
    ``split``: text -> units for distinct-2 (a tokenizer's encode; default: words)."""
    recs = results["records"]
    if baseline not in recs:
        raise ValueError(f"baseline {baseline!r} is not a model of these results: {sorted(recs)}")
    sets = list(results["sets"])
    per_set = {s: {m: recs[m][s] for m in recs} for s in sets}
    per_set["all"] = {m: [r for s in sets for r in recs[m][s]] for m in recs}
    out: dict[str, Any] = {"baseline": baseline, "sets": {s: len(per_set[s][baseline]) for s in per_set},
                           "metrics": {}, "diffs": {}}
    for s, models in per_set.items():
        ids = [r["id"] for r in models[baseline]]
        out["metrics"][s], out["diffs"][s] = {}, {}
        for m, rs in models.items():
            if [r["id"] for r in rs] != ids:
                raise ValueError(f"set {s}: model {m!r} answered other prompts than {baseline!r}")
            out["metrics"][s][m] = {
                "teacher_ll_per_token": sum(r["teacher_ll_per_token"] for r in rs) / len(rs),
                "distinct2": _nanmean([_distinct2(r["answer"], split) for r in rs]),
                "finished": sum(bool(r["finished"]) for r in rs) / len(rs),
                "rougeL_vs_teacher": sum(r["rougeL_vs_teacher"] for r in rs) / len(rs),
                "len_mean": sum(r["n_tokens"] for r in rs) / len(rs),
            }
            if m in (baseline, TEACHER):
                continue
            out["diffs"][s][m] = {}
            for key, get in PAIRED.items():
                mean, lo, hi = paired_bootstrap([get(r) for r in models[baseline]], [get(r) for r in rs],
                                                n_boot=n_boot, seed=seed)
                out["diffs"][s][m][key] = {"mean": mean, "lo": lo, "hi": hi}
    return out


def _tag(t: float) -> str:
    return "greedy" if not t else f"T{t:g}"


def merge_temperatures(results_list: list[dict[str, Any]]) -> dict[str, Any]:
    """gadx.real.evaluate results decoded at different temperatures (their "temperature" key, 0 =
    greedy) as one: every student renamed NAME@greedy / NAME@T0.8; the teacher (greedy in each) once."""
    temps = [r.get("temperature", 0.0) for r in results_list]
    if len(set(temps)) != len(temps):
        raise ValueError(f"each results file must have its own temperature, got {temps}")
    if any(r["sets"] != results_list[0]["sets"] for r in results_list):
        raise ValueError("the results files evaluate different prompt sets")
    recs: dict[str, Any] = {}
    for r, t in zip(results_list, temps):
        for m, per in r["records"].items():
            if m == TEACHER:
                recs.setdefault(TEACHER, per)
            else:
                recs[f"{m}@{_tag(t)}"] = per
    return {"sets": results_list[0]["sets"], "records": recs}


def best_model(results: dict[str, Any], prefix: str) -> str:
    """Of the models named ``prefix`` or ``prefix@...``, the one with the highest teacher LL/tok over every
    prompt of every set (the baseline at its best temperature)."""
    names = [m for m in results["records"] if m == prefix or m.startswith(prefix + "@")]
    if not names:
        raise ValueError(f"no model named {prefix!r} (or {prefix}@...): {sorted(results['records'])}")

    def pooled(m):
        rs = [r for s in results["sets"] for r in results["records"][m][s]]
        return sum(r["teacher_ll_per_token"] for r in rs) / len(rs)

    return max(names, key=pooled)


def _verdict(d: dict[str, float]) -> str:
    if d["lo"] > 0:
        return "higher"
    if d["hi"] < 0:
        return "lower"
    return "no difference"


def format_compare(c: dict[str, Any]) -> str:
    base = c["baseline"]
    names = {**SETS, "all": "all sets pooled"}
    lines = [f"Paired per prompt against {base} (model minus {base}; bootstrap 95% interval over prompts; "
             "an interval holding 0 reads \"no difference\").", ""]
    lines += ["| set (prompts) | model | teacher LL/tok | distinct-2 | finished | ROUGE-L | len | "
              f"Δ LL/tok vs {base} [95% CI] | Δ finished | Δ ROUGE-L |", "|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for s, models in c["metrics"].items():
        for m, v in models.items():
            row = [f"{names.get(s, s)} ({c['sets'][s]})", m, f"{v['teacher_ll_per_token']:.3f}", f"{v['distinct2']:.3f}",
                   f"{v['finished']:.2f}", "—" if m == TEACHER else f"{v['rougeL_vs_teacher']:.1f}", f"{v['len_mean']:.1f}"]
            d = c["diffs"][s].get(m)
            if d is None:
                row += ["", "", ""]
            else:
                ll, fin, rg = d["teacher_ll_per_token"], d["finished"], d["rougeL_vs_teacher"]
                row += [f"{ll['mean']:+.3f} [{ll['lo']:+.3f}, {ll['hi']:+.3f}] {_verdict(ll)}",
                        f"{fin['mean']:+.2f} [{fin['lo']:+.2f}, {fin['hi']:+.2f}]",
                        f"{rg['mean']:+.1f} [{rg['lo']:+.1f}, {rg['hi']:+.1f}]"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_compare(c: dict[str, Any], path) -> None:
    """Per set: each model's teacher LL/tok difference from the baseline with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(c["diffs"])
    models = sorted({m for s in sets for m in c["diffs"][s]})
    keys = [("teacher_ll_per_token", "teacher log-lik / token"), ("finished", "finished rate"),
            ("rougeL_vs_teacher", "ROUGE-L vs teacher")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    width = 0.8 / max(len(models), 1)
    for ax, (key, title) in zip(axes, keys):
        for j, m in enumerate(models):
            ds = [c["diffs"][s][m][key] for s in sets]
            x = [i + j * width for i in range(len(sets))]
            ax.bar(x, [d["mean"] for d in ds], width, label=m,
                   yerr=[[d["mean"] - d["lo"] for d in ds], [d["hi"] - d["mean"] for d in ds]], capsize=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(sets))],
                      [SETS.get(s, s) for s in sets], fontsize=7)
        ax.set_title(f"{title}: model − {c['baseline']}", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
