"""Judge-free evaluation of the real-LLM run: the paper's Table 2 with the teacher's own weights as the yardstick.

    from gadx.real.evaluate import evaluate
    results = evaluate({"before": student_dir, "SeqKD": ..., "GAD": ...}, teacher=teacher_dir,
                       data_dir="runs/smollm2/data", out_dir="runs/smollm2/eval", limit=40,
                       max_new_tokens=128, teacher_url="http://127.0.0.1:8011/v1")

For every model and prompt set (Self-Instruct held-out = in-distribution; Vicuna and
MT-bench first turns = out-of-distribution; the first ``limit`` prompts of each file):

- greedy answers (``max_new_tokens``), the teacher's through its API when ``teacher_url``
  is given, else decoded locally from its folder with the same sampler; with ``temperature`` > 0
  the students' answers are one seeded sample each (the teacher's stay greedy: the reference);
- teacher log-likelihood per token of each answer (its tokens plus EOS when it finished),
  scored by the teacher's weights: a measurement only, the trainer never sees them;
  reported as the mean over prompts of each answer's per-token mean;
- ROUGE-L F1 (0-100) against the teacher's greedy answer to the same prompt;
- mean answer length in tokens (EOS excluded) and the fraction cut at ``max_new_tokens``.

Writes results.md (table), results.json (metrics + per-prompt records) and bars.png. Each
model's answers and scores are cached in ``out_dir``/cache/NAME.json, keyed by its weights
file, the prompts and the budget: rerunning with one more model only answers that one.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from gadx.eval.diagnostics import rouge_l_f1
from gadx.eval.table import table
from gadx.eval.generate import Answer, load_student, student_answers, teacher_answers
from gadx.eval.suites import EvalPrompt, load_prompt_file

SETS = {"heldout_id": "Self-Inst held-out (ID)", "ood_vicuna": "Vicuna (OOD)", "ood_mtbench": "MT-bench t1 (OOD)"}
TEACHER = "teacher"


def load_sets(data_dir: str | Path, limit: int = 0, *, all_prompts: bool = False) -> dict[str, list[EvalPrompt]]:
    """The evaluation prompt files written by :func:`gadx.real.data.write_prompt_files` (first ``limit`` each);
    ``all_prompts``: NAME.all.jsonl where present, every prompt of the set before
    :func:`gadx.real.data.keep_ended_prompts` kept those whose teacher reply ends."""
    data = Path(data_dir)
    out = {}
    for name in SETS:
        every = data / f"{name}.all.jsonl"
        prompts = load_prompt_file(every if all_prompts and every.is_file() else data / f"{name}.jsonl")
        out[name] = prompts[:limit] if limit > 0 else prompts
    return out


@torch.no_grad()
def teacher_loglik(teacher, tokenizer, prompts: list[EvalPrompt], answers: list[Answer], *,
                   batch_size: int = 8) -> list[float]:
    """Per-token mean log-likelihood (nats) of each answer under ``teacher`` (a gadx.models GadxModel)."""
    from gadx.train.lm_oracle import mean_logprobs

    seqs = []
    for p, a in zip(prompts, answers):
        prompt_ids = tokenizer.encode_chat(p.messages, add_generation_prompt=True)
        resp = tokenizer.encode(a.text, add_special_tokens=False) + ([tokenizer.eos_id] if a.finished else [])
        if not resp:  # an empty, unfinished answer has nothing to score
            raise ValueError(f"prompt {p.id!r}: empty answer that did not finish")
        seqs.append((prompt_ids, resp))
    return mean_logprobs(teacher, seqs, pad_id=tokenizer.eos_id, batch_size=batch_size)


def _answers_local(folder, sets: dict[str, list[EvalPrompt]], max_new_tokens: int,
                   batch_size: int, *, temperature: float = 0.0, seed: int = 0) -> dict[str, list[Answer]]:
    every = [p for ps in sets.values() for p in ps]
    model = load_student(folder, prompts=every, max_new_tokens=max_new_tokens, max_batch=batch_size)
    return {s: student_answers(model, ps, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
                               seed=seed + k) for k, (s, ps) in enumerate(sets.items())}


def _answers_api(url: str, model_name: str, prompts, max_new_tokens: int, tokenizer, cache: Path) -> list[Answer]:
    from gadx.teacher import TeacherClient

    with TeacherClient(url, model_name, cache_path=str(cache), max_in_flight=16) as client:
        return teacher_answers(client, prompts, max_new_tokens=max_new_tokens,
                               count_tokens=lambda t: len(tokenizer.encode(t, add_special_tokens=False)))


def _cache_key(folder, teacher, sets: dict[str, list[EvalPrompt]], max_new_tokens: int, api: bool) -> dict:
    """What a model's answers and scores depend on: its weights file, the scorer, the prompts, the budget."""
    w = Path(folder) / "model.safetensors"
    st = w.stat()
    return {"folder": str(Path(folder).resolve()), "weights": [st.st_size, st.st_mtime_ns], "api": api,
            "teacher": str(Path(teacher).resolve()), "max_new_tokens": max_new_tokens,
            "prompts": {s: [p.id for p in ps] for s, ps in sets.items()}}


def evaluate(models: dict[str, str | Path], *, teacher: str | Path, data_dir: str | Path, out_dir: str | Path,
             limit: int = 40, max_new_tokens: int = 128, teacher_url: str | None = None,
             teacher_model_name: str = "smollm2-135m-instruct", batch_size: int = 16, all_prompts: bool = False,
             cache_dir: str | Path | None = None, temperature: float = 0.0, seed: int = 0) -> dict:
    """Answer, score and tabulate; returns the results dict also written to ``out_dir``/results.json.
    ``cache_dir`` (default ``out_dir``/cache): where each model's answers are cached, shareable across runs."""
    from gadx.models import from_pretrained
    from gadx.tokenizer import load_tokenizer

    if TEACHER in models:
        raise ValueError(f"model name {TEACHER!r} is reserved for the teacher row")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sets = load_sets(data_dir, limit, all_prompts=all_prompts)
    tok = load_tokenizer(teacher)
    timings: dict[str, float] = {}
    answers: dict[str, dict[str, list[Answer]]] = {}
    lls: dict[str, dict[str, list[float]]] = {}
    scorer = None
    t0 = time.perf_counter()
    for name, folder in {**models, TEACHER: teacher}.items():
        api = name == TEACHER and bool(teacher_url)
        key = _cache_key(folder, teacher, sets, max_new_tokens, api)
        if temperature > 0 and name != TEACHER:  # (greedy keys unchanged: earlier caches stay valid)
            key.update(temperature=temperature, seed=seed)
        tag = f"@T{temperature:g}" if temperature > 0 and name != TEACHER else ""
        cache = Path(cache_dir or out / "cache") / f"{name}{tag}.json"
        if cache.is_file() and json.loads(cache.read_text())["key"] == key:
            hit = json.loads(cache.read_text())
            answers[name] = {s: [Answer(**a) for a in v] for s, v in hit["answers"].items()}
            lls[name] = hit["ll"]
            timings[f"cached/{name}"] = 0.0
            continue
        t = time.perf_counter()
        if api:
            answers[name] = {s: _answers_api(teacher_url, teacher_model_name, ps, max_new_tokens, tok,
                                             out / "teacher_cache.sqlite") for s, ps in sets.items()}
        else:
            answers[name] = _answers_local(folder, sets, max_new_tokens, batch_size,
                                           temperature=0.0 if name == TEACHER else temperature, seed=seed)
        timings[f"answers/{name}"] = time.perf_counter() - t
        t = time.perf_counter()
        if scorer is None:
            scorer = from_pretrained(teacher, dtype=torch.float32).eval()
        lls[name] = {s: teacher_loglik(scorer, tok, sets[s], a) for s, a in answers[name].items()}
        timings[f"teacher_loglik/{name}"] = time.perf_counter() - t
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "ll": lls[name], "answers": {
            s: [dataclasses.asdict(a) for a in v] for s, v in answers[name].items()}}, ensure_ascii=False))
    del scorer

    results: dict = {"limit": limit, "max_new_tokens": max_new_tokens, "temperature": temperature, "sets": {s: len(p) for s, p in sets.items()},
                     "teacher_answers": "api" if teacher_url else "local", "metrics": {}, "records": {}}
    for name, per in answers.items():
        results["metrics"][name], results["records"][name] = {}, {}
        for s, ans in per.items():
            ref = answers[TEACHER][s]
            rouge = [100.0 * rouge_l_f1(a.text, r.text) for a, r in zip(ans, ref)]
            results["metrics"][name][s] = {
                "teacher_ll_per_token": float(np.mean(lls[name][s])),
                "rougeL_vs_teacher": float(np.mean(rouge)),
                "len_mean": float(np.mean([a.n_tokens for a in ans])),
                "truncated_frac": float(np.mean([not a.finished for a in ans])),
            }
            results["records"][name][s] = [
                {"id": p.id, "answer": a.text, "n_tokens": a.n_tokens, "finished": a.finished,
                 "teacher_ll_per_token": ll, "rougeL_vs_teacher": rg}
                for p, a, ll, rg in zip(sets[s], ans, lls[name][s], rouge)]
    timings["total"] = time.perf_counter() - t0
    results["timings_s"] = timings
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    table = format_table(results)
    (out / "results.md").write_text(table + "\n")
    plot_bars(results, out / "bars.png")
    return results


def format_table(results: dict) -> str:
    """Markdown: one row per model; per set teacher log-lik/token, ROUGE-L vs teacher, mean length."""
    sets = list(results["sets"])
    head = ["model"] + [c for s in sets for c in (f"{SETS.get(s, s)}: LL/tok ↑", "R-L ↑", "len")]
    rows = []
    for name, per in results["metrics"].items():
        cells = []
        for s in sets:
            m = per[s]
            rouge = "—" if name == TEACHER else f"{m['rougeL_vs_teacher']:.1f}"
            cells += [f"{m['teacher_ll_per_token']:.3f}", rouge, f"{m['len_mean']:.1f}"]
        rows.append([name, *cells])
    lines = table(head, rows, right=[False] + [True] * (3 * len(sets)))
    n = ", ".join(f"{SETS.get(s, s)} {k}" for s, k in results["sets"].items())
    lines.append("")
    t = results.get("temperature", 0.0)
    how = f"Students: one sample each at T = {t:g}, the teacher greedy" if t else "Greedy answers"
    lines.append(f"{how}, max {results['max_new_tokens']} new tokens; prompts: {n}. LL/tok: teacher "
                 "log-likelihood per token (nats, mean over prompts; EOS counted when the answer finished). "
                 "R-L: ROUGE-L F1 (0-100) against the teacher's greedy answer. len: mean answer tokens.")
    return "\n".join(lines)


def plot_bars(results: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets, names = list(results["sets"]), list(results["metrics"])
    keys = [("teacher_ll_per_token", "teacher log-lik / token (nats)"), ("rougeL_vs_teacher", "ROUGE-L vs teacher"),
            ("len_mean", "mean answer tokens")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6))
    width = 0.8 / len(names)
    x = np.arange(len(sets))
    for ax, (key, title) in zip(axes, keys):
        for j, name in enumerate(names):
            if key == "rougeL_vs_teacher" and name == TEACHER:
                continue
            ax.bar(x + j * width, [results["metrics"][name][s][key] for s in sets], width, label=name)
        ax.set_xticks(x + width * (len(names) - 1) / 2, [SETS.get(s, s) for s in sets], fontsize=7)
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
