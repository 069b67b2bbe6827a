#!/bin/bash
# The verdict runs of issue 14 on the embedded world: per seed, one SFT start and four arms from it,
#   SeqKD +40 (SFT continued), oracle (GRPO on the exact teacher log-likelihood: the ceiling),
#   GAD (implicit-reward D against the current student, tools/implicit_d.py: gi4 of RESULTS_embedded.md), frozen D (the same D warmed, then frozen: the off-policy control),
# then paired per-prompt comparisons against SeqKD at its best temperature (bootstrap 95%).
#   bash recipes/verdict_embedded.sh OUT [SEEDS...]        # default seeds 0 1 2
# Cost (shared 2-core CPU, load 5-50): SFT start 3-11 min, each GRPO arm 40 steps 8-26 min, SeqKD +40 1 min,
# evaluations 2-5 min each: ~1-2 h per seed, single process each (OMP_NUM_THREADS=1). Measured parts and numbers:
# recipes/RESULTS_embedded.md (seed 0 of every arm but "frozen"; oracle and SeqKD on seeds 0-2).
set -euo pipefail
OUT=${1:?usage: verdict_embedded.sh OUT [SEEDS...]}; shift
SEEDS=${*:-0 1 2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python}
for s in $SEEDS; do
  S=$OUT/seed$s
  [ -f $S/sft/seqkd/student_hf/model.safetensors ] || \
    $PY -m gadx.train --set run.plan=seqkd --set run.seed=$s --set stages.seqkd.steps=520 --set run.out_dir=$S/sft --set run.eval_every=0
  START=$S/sft/seqkd/student_hf
  [ -f $S/sft/seqkd/eval.json ] || $PY tools/oracle_arm.py eval $START --n 200   # -> $S/sft/seqkd/eval.json
  [ -f $S/seqkd40/eval.json ] || $PY tools/oracle_arm.py sft $START $S/seqkd40 --steps 40 --n 200 \
    --set run.seed=$s --set stages.seqkd.lr=3e-4 --set stages.prompts_per_step=16
  [ -f $S/oracle/eval.json ] || $PY tools/oracle_arm.py gad $START $S/oracle --steps 40 --n 200 --config recipes/oracle_arm.toml --set run.seed=$s
  GADARGS="--steps 40 --n 200 --config recipes/oracle_arm.toml --set run.seed=$s --set stages.gad.reward=discriminator --implicit-d --id-lr 3e-4 --id-reward ratio_current --id-warm-pairs 1024"
  [ -f $S/gad/eval.json ] || $PY tools/oracle_arm.py gad $START $S/gad $GADARGS
  [ -f $S/frozen/eval.json ] || $PY tools/oracle_arm.py gad $START $S/frozen $GADARGS --id-frozen
  for arm in oracle gad frozen; do
    echo "== seed $s: $arm (greedy) minus SeqKD +40 at its best temperature"
    $PY tools/oracle_arm.py compare $S/seqkd40/eval.json $S/$arm/eval.json --btemp 0.0
    echo "== seed $s: $arm (greedy) minus the SFT start at its best temperature"
    $PY tools/oracle_arm.py compare $S/sft/seqkd/eval.json $S/$arm/eval.json --btemp 0.0
  done
done
