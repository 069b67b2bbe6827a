#!/usr/bin/env bash
# gadx's one prepared GPU check for a lent H100/H200 (< 8 min), two parts:
#   1. tools/gpu_check_step.py (~2 min): the trainer's GAD step on CUDA in bf16, Triton kernels compiled
#      for the GPU vs the float64 reference, `gadx plan`'s fake-tensor estimate vs the step's measured
#      torch.cuda.max_memory_allocated; one JSON line "GPU_CHECK_STEP {...}", $OUT/gpu_check_step.json
#   2. tools/gpu_bench.py (the rest of the budget): kernel table, sampler tokens/s, update-step MFU.
# The last line printed is the step check's JSON summary again.
#
# The device image has torch/triton/transformers but not megatron-core, so carry its wheel.
# Once, here, in the repo root (.whl/ must be git-ignored so it travels only when carried):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl megatron-core==0.16.1
# Then, through the device tool:
#   run(command="GADX_COMMIT=<short hash> bash tools/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Locally (no GPU): bash tools/gpu_check.sh --dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/gpu_bench_out}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && [ "${1:-}" = "--dry-run" ] && PY=.venv/bin/python

if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gadx_site .whl/*.whl \
        || { echo "gpu_check: installing the carried wheels failed" >&2; exit 3; }
    export PYTHONPATH="/tmp/gadx_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # gadx from this checkout; gpu_bench maps kernels/ itself

command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import megatron.core" 2> /dev/null || echo "gpu_check: megatron-core is not importable: carry .whl (see header)" >&2

# ~2 min for the step check, 270 s of benchmark sections, the rest of the 8 minutes for start-up
timeout 200 $PY tools/gpu_check_step.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check_step.log"
step_rc=${PIPESTATUS[0]}
timeout 290 $PY tools/gpu_bench.py --out "$OUT" --budget-s 270 "$@" 2>&1 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
grep -h '^GPU_CHECK_STEP ' "$OUT/gpu_check_step.log" | tail -1
echo "gpu_check: step check rc=$step_rc, bench rc=$bench_rc"
[ "$step_rc" -eq 0 ] && exit "$bench_rc"
exit "$step_rc"
