#!/usr/bin/env bash
# The prepared GPU check (docs/SCALE.md): on one GPU, in under 8 minutes,
#   1. the smoke chain on cuda from an empty artefact store, asserting that the GPU was used;
#   2. the beam benchmark (bench/bench_beam.py) on cuda;
#   3. the Beauty chain of the cpu profile on cuda (2 + 2 epochs, extrapolated to the profile's 8 + 15),
#      with per-stage seconds and peak GPU memory;
#   4. the smoke chain again with bf16 autocast, and its test metrics minus float32's.
# Everything goes to one JSON file (default gpu_check.json), rewritten after each section; a section that
# would start after 7 minutes is skipped and named. Usage:
#   bench/gpu_check.sh [out.json]
# Then copy the results, with the card's name, into docs/REPRODUCIBILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-gpu_check.json}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export UNGER_THREADS=${UNGER_THREADS:-4} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 470 "$PY" bench/gpu_check.py --device cuda --out "$OUT" --budget-s 400
echo "results: $OUT"
