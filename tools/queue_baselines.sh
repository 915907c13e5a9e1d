#!/usr/bin/env bash
# Session helper: Table 3's rerun baselines on the cpu profile, one thread, one after another
# (runs beside the Stage I/II queue; each run is a cached artefact, so a rerun only loads).
set -uo pipefail
cd "$(dirname "$0")/.."
export UNGER_THREADS=1
for spec in "$@"; do  # Dataset:Model
  ds=${spec%%:*}; m=${spec##*:}
  echo "=== $(date +%T) $ds $m"
  .venv/bin/python -m ungerlib.overall --profile cpu --dataset "$ds" --models "$m"
  echo "=== $(date +%T) $ds $m rc=$?"
done
