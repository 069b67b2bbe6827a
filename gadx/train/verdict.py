"""The verdict's evaluation on the embedded world: validity by temperature, teacher log-likelihood,
exact KL(teacher || student), task accuracy, and the paired per-prompt comparison with its bootstrap.

    ev = evaluate_model(world, tok, engine, hf_state, model_cfg, {"test_id": [...], "test_ood": [...]}, k=4)
    t = best_temperature(ev_val["test_id"])                    # SeqKD's best T, chosen on validation prompts
    mean, lo, hi = paired_bootstrap(a_per_prompt, b_per_prompt)   # B - A with a 95% interval

One implementation for the trainer's main job (gadx/train/run.py) and tools/oracle_arm.py. The
teacher's probabilities are read here only: a diagnostic, never a training signal. Per split and
temperature T (1.0, 0.8, 0.6: ``k`` samples per prompt; 0.0 = greedy, one):
  valid      share of samples the teacher could write (finished, exact log T > -inf)
  logT_tok   the oracle reward: mean over samples of max(log T / tokens, floor)
  logT_valid log T per token over the valid samples only (sum / tokens)
  task       task accuracy (the family's check)
  tv         phrasing distance to the teacher's mix (world.teacher_phrasing_distance)
  len        reply length in tokens
  per_prompt_valid / per_prompt_logT_tok / per_prompt_task: one number per prompt (for the pairing)
and per split ``kl_ts``: KL(teacher || student) per token, exact, on 4 teacher samples per prompt
(the student's log-prob of the teacher's own replies at T = 1: coverage).

Sampling: temperature T's call over all prompts of a split is seeded by T; each row draws the random
numbers it would draw in one unsplit call (``generate(rows=)``), so a data-parallel split of the
prompts (``share``) gives the same samples as one process.
"""
from __future__ import annotations

import math
import random
import statistics
from typing import Any, Callable, Sequence

import torch

TEMPS = (1.0, 0.8, 0.6, 0.0)
FLOOR = -20.0
KL_SAMPLES = 4  # teacher samples per prompt for KL(teacher || student)


# ---- statistics -------------------------------------------------------------------------------


def best_temperature(split_metrics: dict[str, Any], metric: str = "valid", temps: Sequence[float] = TEMPS) -> float:
    """The temperature whose ``metric`` is highest (the first of ``temps`` on a tie)."""
    best = max(temps, key=lambda t: (split_metrics[str(t)][metric], -list(temps).index(t)))
    return float(best)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the per-prompt differences b - a and its bootstrap 95% interval (prompts resampled)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty lists, got {len(a)} and {len(b)}")
    d = [y - x for x, y in zip(a, b)]
    n = len(d)
    rng = random.Random(seed)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo, hi = boots[int(0.025 * n_boot)], boots[min(int(math.ceil(0.975 * n_boot)) - 1, n_boot - 1)]
    return sum(d) / n, lo, hi


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std over seeds; -inf (no valid reply) propagates."""
    if not all(math.isfinite(x) for x in xs):
        return float("-inf"), float("nan")
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


# ---- sampling and scoring ---------------------------------------------------------------------


def _share(n: int, share: tuple[int, int]) -> range:
    """Prompts [lo, hi) of part ``share = (i, parts)``: contiguous, as even as possible."""
    i, parts = share
    return range(i * n // parts, (i + 1) * n // parts)


def _gather(obj: list, group) -> list:
    """Concatenate every rank's list (in rank order); one process: the list."""
    import torch.distributed as dist

    if group is None or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return obj
    parts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, obj, group=group)
    return [x for p in parts for x in p]


def _generate(engine, prompts: list[list[int]], rows: range, total: int, *, max_new: int, t: float, eos, seed: int):
    """Rows ``rows`` of one call of ``total`` rows, in chunks of the engine's batch."""
    chunk = getattr(engine, "max_batch", None) or len(rows) or 1
    out: list[tuple[list[int], bool]] = []
    for c in range(rows.start, rows.stop, chunk):
        hi = min(c + chunk, rows.stop)
        roll = engine.generate(prompts[c:hi], max_new_tokens=max_new, temperature=t, eos_ids=eos, seed=seed,
                               rows=(c, total))
        out += [(list(r), bool(f)) for r, f in zip(roll.responses, roll.finished)]
    return out


def score_samples(world, prompts: list[str], texts: list[str], n_tokens: list[int], finished: list[bool], k: int,
                  floor: float = FLOOR) -> dict[str, Any]:
    """The metrics of one temperature: ``k`` samples per prompt, prompt-major."""
    P = len(prompts)
    assert len(texts) == P * k, (len(texts), P, k)
    ptxt = [p for p in prompts for _ in range(k)]
    lt = [world.teacher.logprob(p, x) if f else -math.inf for p, x, f in zip(ptxt, texts, finished)]
    per_tok = [max(l / max(n, 1), floor) if math.isfinite(l) else floor for l, n in zip(lt, n_tokens)]
    task = [float(bool(world.teacher.is_correct(p, x))) for p, x in zip(ptxt, texts)]
    fin = [(l, n) for l, n in zip(lt, n_tokens) if math.isfinite(l)]

    def per_prompt(xs):
        return [sum(xs[i * k:(i + 1) * k]) / k for i in range(P)]

    valid = [float(math.isfinite(l)) for l in lt]
    return {
        "valid": sum(valid) / len(valid),
        "logT_tok": sum(per_tok) / len(per_tok),
        "logT_valid": sum(l for l, _ in fin) / sum(n for _, n in fin) if fin else -math.inf,
        "task": sum(task) / len(task),
        "tv": world.teacher_phrasing_distance(ptxt, texts)["all"],
        "len": sum(n_tokens) / len(n_tokens),
        "per_prompt_valid": per_prompt(valid), "per_prompt_logT_tok": per_prompt(per_tok),
        "per_prompt_task": per_prompt(task),
    }


def teacher_samples(world, prompts: list[str], n: int = KL_SAMPLES, seed: int = 99) -> list[str]:
    rng = random.Random(seed)
    return [world.teacher.sample(p, rng) for p in prompts for _ in range(n)]


def evaluate_model(world, tok, engine, hf_state: dict[str, torch.Tensor], model_cfg, prompts: dict[str, list[str]], *,
                   k: int = 4, temps: Sequence[float] = TEMPS, max_prompt_len: int = 48, max_new: int = 48,
                   kl: bool = True, share: tuple[int, int] = (0, 1), group=None, progress: Callable | None = None,
                   seed: int = 1234) -> dict[str, Any]:
    """Every metric of the module docstring for one student (``hf_state``: its HF weights, also
    loaded into ``engine``; ``model_cfg``: its gadx.models.ModelConfig) on ``prompts`` = {split: prompt texts}. ``share``/``group``: this rank's
    part of the prompts and the group that gathers the parts (the result is the same on every rank).
    ``progress(n)``: called after each unit of work (len(temps) + kl per split)."""
    from .sequences import encode_prompt, encode_teacher_reply

    engine.load_weights(hf_state)
    eos = [tok.eos_id]
    out: dict[str, Any] = {}
    try:
        for split, texts_p in prompts.items():
            ids = [encode_prompt(tok, [{"role": "user", "content": p}], max_prompt_len).ids for p in texts_p]
            mine = _share(len(ids), share)
            sp: dict[str, Any] = {}
            for t in temps:
                kk = 1 if t == 0 else k
                rep = [x for x in ids for _ in range(kk)]
                rows = range(mine.start * kk, mine.stop * kk)
                got = _gather(_generate(engine, rep, rows, len(rep), max_new=max_new, t=t, eos=eos,
                                        seed=seed + int(round(t * 100))), group)
                resp = [r for r, _ in got]
                sp[str(t)] = score_samples(world, texts_p, [tok.decode(r, skip_special_tokens=True) for r in resp],
                                           [len(r) for r in resp], [f for _, f in got], kk)
                if progress:
                    progress(1)
            if kl:
                t_txt = teacher_samples(world, texts_p)
                t_ids = [encode_teacher_reply(tok, x, 10_000) for x in t_txt]
                t_pr = [x for x in ids for _ in range(KL_SAMPLES)]
                rows = range(mine.start * KL_SAMPLES, mine.stop * KL_SAMPLES)
                lS = _gather(student_logprobs(hf_state, model_cfg, [t_pr[i] for i in rows], [t_ids[i] for i in rows]), group)
                lT = [world.teacher.logprob(p, x) for p, x in zip([p for p in texts_p for _ in range(KL_SAMPLES)], t_txt)]
                sp["kl_ts"] = (sum(lT) - sum(lS)) / sum(len(r) for r in t_ids)
                if progress:
                    progress(1)
            out[split] = sp
    finally:
        from gadx.sampler.chunked import release

        release(engine)
    return out


def evaluate_teacher(world, prompts: dict[str, list[str]], tok, *, n: int = KL_SAMPLES) -> dict[str, Any]:
    """The teacher's own samples (T = 1), scored like a student's: the reference row (KL 0)."""
    from .sequences import encode_teacher_reply

    out = {}
    for split, texts_p in prompts.items():
        t_txt = teacher_samples(world, texts_p, n)
        n_tok = [len(encode_teacher_reply(tok, x, 10_000)) for x in t_txt]
        m = score_samples(world, texts_p, t_txt, n_tok, [True] * len(t_txt), n)
        out[split] = {"1.0": m, "0.0": m, "kl_ts": 0.0}
    return out


def student_logprobs(sd: dict[str, torch.Tensor], mc, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
    """log S(response | prompt) at T = 1 with a plain PyTorch forward of the HF weights (Qwen2 shape,
    any layout: the weights are the gathered ones). ``mc``: a gadx.models.ModelConfig."""
    import torch.nn.functional as F

    H, nh, nkv = mc.hidden_size, mc.num_heads, mc.num_kv_heads
    hd = mc.head_dim or H // nh
    emb = sd["model.embed_tokens.weight"].float()
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"]).float()
    L = mc.num_layers
    w = {k: v.float() for k, v in sd.items()}

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mc.rms_norm_eps) * g

    def rope(x, pos):  # x [h, T, hd]
        inv = 1.0 / (mc.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = pos[:, None].float() * inv[None]
        cos, sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    out = []
    with torch.no_grad():
        for p, r in zip(prompts, responses, strict=True):
            ids = torch.tensor(list(p) + list(r))
            T = ids.numel()
            x = emb[ids]
            pos = torch.arange(T)
            for i in range(L):
                pre = f"model.layers.{i}."
                h = rms(x, w[pre + "input_layernorm.weight"])
                q = F.linear(h, w[pre + "self_attn.q_proj.weight"], w.get(pre + "self_attn.q_proj.bias"))
                kk = F.linear(h, w[pre + "self_attn.k_proj.weight"], w.get(pre + "self_attn.k_proj.bias"))
                v = F.linear(h, w[pre + "self_attn.v_proj.weight"], w.get(pre + "self_attn.v_proj.bias"))
                q = rope(q.view(T, nh, hd).transpose(0, 1), pos)
                kk = rope(kk.view(T, nkv, hd).transpose(0, 1), pos).repeat_interleave(nh // nkv, 0)
                v = v.view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
                att = F.scaled_dot_product_attention(q, kk, v, is_causal=True).transpose(0, 1).reshape(T, nh * hd)
                x = x + F.linear(att, w[pre + "self_attn.o_proj.weight"])
                h = rms(x, w[pre + "post_attention_layernorm.weight"])
                x = x + F.linear(F.silu(F.linear(h, w[pre + "mlp.gate_proj.weight"])) * F.linear(h, w[pre + "mlp.up_proj.weight"]),
                                 w[pre + "mlp.down_proj.weight"])
            x = rms(x, w["model.norm.weight"])
            logits = F.linear(x[len(p) - 1: T - 1], head)
            out.append(float(torch.log_softmax(logits, -1).gather(1, ids[len(p):, None]).sum()))
    return out
