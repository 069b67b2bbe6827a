"""Size and judge the GAD stage on the embedded world: arms that start from one SFT student, and their evaluation.

    # the SFT start (and the SeqKD arm's first part): python -m gadx.train --set run.plan=seqkd ... -> <out>/seqkd/student_hf
    python tools/oracle_arm.py gad   START OUT [--steps 40] [--d-warm 20] [--set stages.gad.reward=oracle ...]  # GRPO arm
    python tools/oracle_arm.py gad   START OUT --implicit-d [--id-lr 3e-4] [--id-warm-pairs 1024]  # GAD, implicit D
    python tools/oracle_arm.py sft   START OUT [--steps 40] [--set stages.seqkd.lr=3e-4 ...]      # SeqKD continued
    python tools/oracle_arm.py eval  FOLDER [--n 64] [--k 4]          # -> FOLDER/eval.json
    python tools/oracle_arm.py compare A B [--metric valid] [--temp best]  # paired per-prompt difference, bootstrap 95%

Every arm writes OUT/student_hf and OUT/eval.json. The GAD arm's discriminator is the
start student's trunk with a fresh score head (D is trained online even under the oracle
reward, so its accuracy against acc* is logged on the same rollouts). Evaluation (teacher
probabilities: a diagnostic) on the first n prompts of test_id and test_ood, k samples per
prompt at T = 1.0, 0.8, 0.6 and greedy:
  valid      share of samples the teacher could write (finished, log T > -inf)
  logT_tok   oracle reward: mean over samples of max(log T / tokens, -20)
  logT_valid log T per token over the valid samples only (sum / tokens)
  task       task accuracy (the family's code check)
  tv         phrasing distance to the teacher's mix (world.teacher_phrasing_distance)
  kl_ts      exact KL(teacher || student) per token on 4 teacher samples per prompt
             (coverage: the student's log-prob of the teacher's own replies, at T=1)
Single process; keep OMP_NUM_THREADS small on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

TEMPS = (1.0, 0.8, 0.6, 0.0)
FLOOR = -20.0


def _cfg(start: Path, out: Path, sets: list[str], config: str = ""):
    from gadx.train.config import load_config

    argv = (["--config", config] if config else []) + ["--set", f"model.student={start}", "--set", f"run.out_dir={out}", "--set", "run.progress=false",
            "--set", "run.tensorboard=false", "--set", "run.eval_every=0"]
    for s in sets:
        argv += ["--set", s]
    cfg, _ = load_config(argv)
    return cfg


def cmd_gad(a) -> None:
    from gadx.models import save_pretrained
    from gadx.train.env import Env
    from gadx.train.trainer import Run, copy_trunk

    out = Path(a.out)
    sets = a.set
    if a.d_warm:
        sets = [f"stages.warmup.steps={a.d_warm}", f"stages.warmup.d_only_steps={a.d_warm}", "stages.warmup.g_only_steps=0",
                "stages.sft_prompts_per_step=0", "stages.gad.d_gate_steps=0", "stages.gad.d_acc_gate=0.0",
                f"stages.gad.steps={a.steps}", *a.set]
    if a.implicit_d:  # the trainer's D is left frozen (its scores unused); the implicit D scores and learns
        sets = [*sets, "stages.gad.freeze_discriminator=true"]
    cfg = _cfg(Path(a.start), out, sets, a.config)
    env = Env(cfg)
    t0 = time.perf_counter()
    try:
        idisc = None
        if a.implicit_d:
            from implicit_d import ImplicitD
            from gadx.world import World

            idisc = ImplicitD.from_folder(a.start, lr=a.id_lr, temperature=cfg.stages.temperature, epochs=a.id_epochs,
                                          seed=cfg.run.seed, reward=a.id_reward,
                                          online=not a.id_frozen)
            _, _, eng0, tok0 = _load(Path(a.start))
            warm_loss = idisc.warm(World(seed=cfg.data.world_seed), tok0, eng0, a.id_warm_pairs, seed=cfg.run.seed + 11)
            print(f"implicit D: {a.id_warm_pairs} warm-up pairs, loss {warm_loss:.3f} "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
        dpath = out / "D0"
        if not (dpath / "config.json").exists():
            student = env.load(a.start)
            disc = env.build(head="score", seed=cfg.run.seed + 1)
            copy_trunk(student, disc)
            save_pretrained(disc, dpath)
        if a.d_warm:  # D-only steps first (G untouched), then GAD: the pipeline's D warmup, without its SFT
            r = Run(cfg, env, name="gad", out_dir=out / "gad", discriminator=dpath)
        else:
            r = Run(cfg, env, name="gad", out_dir=out / "gad", gad_only=a.steps, discriminator=dpath)
        if idisc is not None:
            make_ctx = r._ctx

            def d_scores(batch, prompts, responses):
                if a.id_reward == "ratio_current":  # the reference is the student as it is now
                    idisc.set_current(env.engine_weights(r.G.model))
                return idisc(batch, prompts, responses)

            def ctx_with_d():
                c = make_ctx()
                c.d_scores = d_scores
                return c
            r._ctx = ctx_with_d
        r.train()
        if idisc is not None:
            (out / "implicit_d.jsonl").write_text("".join(json.dumps(x) + "\n" for x in idisc.log))
        save_pretrained(r.G.model, out / "student_hf")
        env.tok.save(out / "student_hf")
    finally:
        env.close()
    wall = time.perf_counter() - t0
    _summarise(out / "gad" / "metrics.jsonl", wall)
    _eval(out / "student_hf", a.n, a.k, extra={"wall_s": wall, "steps": a.steps, "sets": a.set})


def cmd_sft(a) -> None:
    from gadx.models import save_pretrained
    from gadx.train.env import Env
    from gadx.train.trainer import Run

    out = Path(a.out)
    sets = ["run.plan=seqkd", f"stages.seqkd.steps={a.steps}", "stages.sft_prompts_per_step=0",
            "stages.sft_lr_schedule=constant", *a.set]
    cfg = _cfg(Path(a.start), out, sets, a.config)
    env = Env(cfg)
    t0 = time.perf_counter()
    try:
        r = Run(cfg, env, name="seqkd", out_dir=out / "seqkd")
        r.train()
        save_pretrained(r.G.model, out / "student_hf")
        env.tok.save(out / "student_hf")
    finally:
        env.close()
    wall = time.perf_counter() - t0
    _eval(out / "student_hf", a.n, a.k, extra={"wall_s": wall, "steps": a.steps, "sets": sets})


def _summarise(path: Path, wall: float) -> None:
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    keys = ("reward/mean", "oracle/valid", "oracle/logT_per_token", "kl", "entropy", "d_acc/train_ties",
            "d_acc/ceiling", "corr/d_vs_logT", "reward/no_spread", "len/student")
    for i, r in enumerate(rows):
        if i % max(len(rows) // 8, 1) == 0 or i == len(rows) - 1:
            print(f"step {r['step']:4d} " + " ".join(f"{k.split('/')[-1]}={r[k]:.3f}" if isinstance(r.get(k), float) else f"{k.split('/')[-1]}={r.get(k)}"
                                              for k in keys), flush=True)
    print(f"wall {wall:.0f} s for {len(rows)} steps", flush=True)


# ---- evaluation -----------------------------------------------------------------------------


def _load(folder: Path):
    from gadx.models import ModelConfig
    from gadx.sampler import KVCacheSampler
    from gadx.tokenizer import load_tokenizer
    from safetensors.torch import load_file

    mc = ModelConfig.from_pretrained(folder)
    sd = load_file(str(folder / "model.safetensors"))
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    eng = KVCacheSampler(mc, max_batch=512, max_seq_len=mc.max_position_embeddings)
    eng.load_weights(sd)
    return mc, sd, eng, load_tokenizer(folder)


def _eval(folder: Path, n: int, k: int, extra: dict | None = None) -> dict:
    from gadx.train.sequences import encode_prompt, encode_teacher_reply
    from gadx.world import World

    mc, sd, eng, tok = _load(folder)
    world = World(seed=0)
    eos = [tok.eos_id]
    max_new = 48
    res: dict = {"folder": str(folder), **(extra or {}), "splits": {}}
    for split in ("test_id", "test_ood"):
        exs = world.split(split)[:n]
        prompts = [ex.prompt for ex in exs]
        ids = [encode_prompt(tok, [{"role": "user", "content": p}], 48).ids for p in prompts]
        sp = {}
        for t in TEMPS:
            kk = 1 if t == 0 else k
            rep = [x for x in ids for _ in range(kk)]
            roll = _generate(eng, rep, max_new, t, eos)
            texts = [tok.decode(r, skip_special_tokens=True) for r in roll.responses]
            ptxt = [p for p in prompts for _ in range(kk)]
            lt = [world.teacher.logprob(p, x) if f else -math.inf for p, x, f in zip(ptxt, texts, roll.finished)]
            per_tok = [max(l / len(r), FLOOR) if math.isfinite(l) else FLOOR for l, r in zip(lt, roll.responses)]
            fin = [(l, len(r)) for l, r in zip(lt, roll.responses) if math.isfinite(l)]
            task = [bool(world.teacher.is_correct(p, x)) for p, x in zip(ptxt, texts)]
            per_prompt_valid = [sum(math.isfinite(l) for l in lt[i * kk:(i + 1) * kk]) / kk for i in range(len(prompts))]
            per_prompt_r = [sum(per_tok[i * kk:(i + 1) * kk]) / kk for i in range(len(prompts))]
            sp[str(t)] = {
                "valid": sum(math.isfinite(l) for l in lt) / len(lt),
                "logT_tok": sum(per_tok) / len(per_tok),
                "logT_valid": sum(l for l, _ in fin) / sum(c for _, c in fin) if fin else -math.inf,
                "task": sum(task) / len(task),
                "tv": world.teacher_phrasing_distance(ptxt, texts)["all"],
                "len": sum(len(r) for r in roll.responses) / len(roll.responses),
                "per_prompt_valid": per_prompt_valid, "per_prompt_logT_tok": per_prompt_r,
            }
        # coverage: exact KL(teacher || student) per token on teacher samples
        rng = random.Random(99)
        t_txt = [world.teacher.sample(p, rng) for p in prompts for _ in range(4)]
        t_ids = [encode_teacher_reply(tok, x, 10_000) for x in t_txt]
        t_pr = [x for x in ids for _ in range(4)]
        lS = _student_logprobs(mc, sd, t_pr, t_ids)
        lT = [world.teacher.logprob(p, x) for p, x in zip([p for p in prompts for _ in range(4)], t_txt)]
        ntok = sum(len(r) for r in t_ids)
        sp["kl_ts"] = (sum(lT) - sum(lS)) / ntok
        res["splits"][split] = sp
    (folder.parent / "eval.json").write_text(json.dumps(res, indent=1))
    print(_table(res), flush=True)
    return res


def _generate(eng, prompts, max_new: int, t: float, eos):
    """Sampling in calls of 256 (the sampler's max_batch is 512), call c seeded 1234 + c."""
    from gadx.sampler import Rollout

    parts = [eng.generate(prompts[c:c + 256], max_new_tokens=max_new, temperature=t, eos_ids=eos, seed=1234 + c)
             for c in range(0, len(prompts), 256)]
    return Rollout([r for p in parts for r in p.responses], [x for p in parts for x in p.logprobs],
                   [f for p in parts for f in p.finished], torch.cat([p.lengths for p in parts]))


def _student_logprobs(mc, sd, prompts, responses) -> list[float]:
    """log S(response | prompt) at T=1 with a plain PyTorch forward of the HF weights (Qwen2 shape)."""
    import torch.nn.functional as F

    H, nh, nkv = mc.hidden_size, mc.num_heads, mc.num_kv_heads
    hd = mc.head_dim or H // nh
    out = []
    emb = sd["model.embed_tokens.weight"]

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + mc.rms_norm_eps) * w

    def rope(x, pos):  # x [h, T, hd]
        inv = 1.0 / (mc.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = pos[:, None].float() * inv[None]
        cos, sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    with torch.no_grad():
        for p, r in zip(prompts, responses):
            ids = torch.tensor(list(p) + list(r))
            T = ids.numel()
            x = emb[ids]
            pos = torch.arange(T)
            for i in range(mc.num_layers):
                pre = f"model.layers.{i}."
                h = rms(x, sd[pre + "input_layernorm.weight"])
                q = F.linear(h, sd[pre + "self_attn.q_proj.weight"], sd.get(pre + "self_attn.q_proj.bias"))
                kk = F.linear(h, sd[pre + "self_attn.k_proj.weight"], sd.get(pre + "self_attn.k_proj.bias"))
                v = F.linear(h, sd[pre + "self_attn.v_proj.weight"], sd.get(pre + "self_attn.v_proj.bias"))
                q = rope(q.view(T, nh, hd).transpose(0, 1), pos)
                kk = rope(kk.view(T, nkv, hd).transpose(0, 1), pos).repeat_interleave(nh // nkv, 0)
                v = v.view(T, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, 0)
                att = F.scaled_dot_product_attention(q, kk, v, is_causal=True).transpose(0, 1).reshape(T, nh * hd)
                x = x + F.linear(att, sd[pre + "self_attn.o_proj.weight"])
                h = rms(x, sd[pre + "post_attention_layernorm.weight"])
                x = x + F.linear(F.silu(F.linear(h, sd[pre + "mlp.gate_proj.weight"])) * F.linear(h, sd[pre + "mlp.up_proj.weight"]),
                                 sd[pre + "mlp.down_proj.weight"])
            x = rms(x, sd["model.norm.weight"])
            logits = F.linear(x[len(p) - 1: T - 1], sd["lm_head.weight"])
            lp = torch.log_softmax(logits.float(), -1).gather(1, ids[len(p):, None]).sum()
            out.append(float(lp))
    return out


def _table(res: dict) -> str:
    lines = [f"{res['folder']}", "split | T | valid | logT_tok | logT_valid | task | tv | len"]
    for split, sp in res["splits"].items():
        for t in TEMPS:
            m = sp[str(t)]
            lines.append(f"{split} | {t} | {m['valid']:.3f} | {m['logT_tok']:.2f} | {m['logT_valid']:.3f} | {m['task']:.3f} | {m['tv']:.3f} | {m['len']:.1f}")
        lines.append(f"{split} | KL(T||S)/tok = {sp['kl_ts']:.3f}")
    return "\n".join(lines)


def cmd_eval(a) -> None:
    _eval(Path(a.folder), a.n, a.k)


def cmd_compare(a) -> None:
    """Paired per-prompt difference B - A with a bootstrap 95% interval; A at its best temperature
    (by the metric's mean) unless --temp says otherwise; B at --btemp."""
    ea, eb = (json.loads((Path(x).parent / "eval.json").read_text()) if Path(x).is_dir() else json.loads(Path(x).read_text())
              for x in (a.a, a.b))
    key = {"valid": "per_prompt_valid", "logT_tok": "per_prompt_logT_tok"}[a.metric]
    rng = random.Random(0)
    for split in ("test_id", "test_ood"):
        sa, sb = ea["splits"][split], eb["splits"][split]
        ta = max((str(t) for t in TEMPS), key=lambda t: sa[t][a.metric]) if a.temp == "best" else a.temp
        xa, xb = sa[ta][key], sb[a.btemp][key]
        d = [y - x for x, y in zip(xa, xb)]
        boots = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(2000))
        print(f"{split}: {a.metric} A@T={ta} {sum(xa)/len(xa):.3f}  B@T={a.btemp} {sum(xb)/len(xb):.3f}  "
              f"B-A {sum(d)/len(d):+.3f} [{boots[49]:+.3f}, {boots[1949]:+.3f}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("gad", "sft"):
        p = sub.add_parser(name)
        p.add_argument("start")
        p.add_argument("out")
        p.add_argument("--steps", type=int, default=40)
        p.add_argument("--config", default="", help="a recipe applied before the --set overrides")
        p.add_argument("--d-warm", type=int, default=0, help="gad: D-only steps before the GAD steps")
        p.add_argument("--set", action="append", default=[])
        p.add_argument("--implicit-d", action="store_true", help="gad: D = tools/implicit_d.py's implicit reward")
        p.add_argument("--id-lr", type=float, default=3e-4, help="implicit D's lr")
        p.add_argument("--id-reward", default="ratio", choices=("ratio", "logp", "ratio_current"),
                       help="implicit D: reward = D (ratio) or its learned part log P_theta per token (logp)")
        p.add_argument("--id-frozen", action="store_true",
                       help="implicit D: no updates during GAD (with --id-warm-pairs 0: P_theta = the start student)")
        p.add_argument("--id-epochs", type=int, default=1, help="implicit D's passes over each step's pairs")
        p.add_argument("--id-warm-pairs", type=int, default=1024, help="implicit D's D-only pairs before GAD")
        p.add_argument("--n", type=int, default=64)
        p.add_argument("--k", type=int, default=4)
    p = sub.add_parser("eval")
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--k", type=int, default=4)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--metric", default="valid", choices=("valid", "logT_tok"))
    p.add_argument("--temp", default="best")
    p.add_argument("--btemp", default="1.0")
    a = ap.parse_args(argv)
    {"gad": cmd_gad, "sft": cmd_sft, "eval": cmd_eval, "compare": cmd_compare}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
