"""Size and judge the GAD stage on the embedded world: arms that start from one SFT student, and their evaluation.

    # the SFT start (and the SeqKD arm's first part): python -m gadx.train --set run.plan=seqkd ... -> <out>/seqkd/student_hf
    python tools/oracle_arm.py gad   START OUT [--steps 40] [--d-warm 20] [--set stages.gad.reward=oracle ...]  # GRPO arm
    python tools/oracle_arm.py gad   START OUT --implicit-d [--id-lr 3e-4] [--id-warm-pairs 1024]  # GAD, implicit D
    python tools/oracle_arm.py sft   START OUT [--steps 40] [--set stages.seqkd.lr=3e-4 ...]      # SeqKD continued
    python tools/oracle_arm.py eval  FOLDER [--n 64] [--k 4]          # -> FOLDER/eval.json
    python tools/oracle_arm.py compare A B [--metric valid] [--temp best]  # paired per-prompt difference, bootstrap 95%

The evaluation and the comparison are gadx/train/verdict.py's (the trainer's main job uses the
same code: `torchrun --nproc-per-node 2 -m gadx.train`, plan=compare). Every arm writes OUT/student_hf and OUT/eval.json. The GAD arm's discriminator is the
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
import sys
import time
from pathlib import Path


from gadx.train.verdict import TEMPS  # the evaluation lives in gadx/train/verdict.py


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
    sets = ["discriminator.kind=score", *sets]  # its D starts from the D0 folder below: a score-head D
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
                                          online=not a.id_frozen, sft_weight=a.id_sft)
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
    """gadx.train.verdict's metrics of an HF student folder on the first n prompts of each test split."""
    from gadx.train.verdict import evaluate_model
    from gadx.world import World

    mc, sd, eng, tok = _load(folder)
    world = World(seed=0)
    prompts = {s: [ex.prompt for ex in world.split(s)[:n]] for s in ("test_id", "test_ood")}
    res: dict = {"folder": str(folder), **(extra or {}),
                 "splits": evaluate_model(world, tok, eng, sd, mc, prompts, k=k, max_prompt_len=48, max_new=48)}
    (folder.parent / "eval.json").write_text(json.dumps(res, indent=1))
    print(_table(res), flush=True)
    return res


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
    from gadx.train.verdict import best_temperature, paired_bootstrap

    ea, eb = (json.loads((Path(x).parent / "eval.json").read_text()) if Path(x).is_dir() else json.loads(Path(x).read_text())
              for x in (a.a, a.b))
    key = {"valid": "per_prompt_valid", "logT_tok": "per_prompt_logT_tok"}[a.metric]
    for split in ("test_id", "test_ood"):
        sa, sb = ea["splits"][split], eb["splits"][split]
        ta = str(best_temperature(sa, a.metric)) if a.temp == "best" else a.temp
        xa, xb = sa[ta][key], sb[a.btemp][key]
        mean, lo, hi = paired_bootstrap(xa, xb, seed=0)
        print(f"{split}: {a.metric} A@T={ta} {sum(xa)/len(xa):.3f}  B@T={a.btemp} {sum(xb)/len(xb):.3f}  "
              f"B-A {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")


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
        p.add_argument("--id-sft", type=float, default=0.0, help="implicit D: + this x NLL/token of the teacher reply")
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
