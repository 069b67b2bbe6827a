#!/usr/bin/env bash
# gadx's one prepared GPU check for a lent H100/H200 (< 8 min): kernel table, sampler tokens/s,
# update-step MFU, printed as one table last; JSON and the log land in $OUT.
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

# 450 s of sections, the rest of the 8 minutes for start-up and imports
timeout 470 $PY tools/gpu_bench.py --out "$OUT" --budget-s 450 "$@" 2>&1 | tee "$OUT/gpu_bench.log"
exit "${PIPESTATUS[0]}"
