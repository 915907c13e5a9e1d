#!/usr/bin/env bash
# Session helper (not part of the build): cpu-profile jobs one after another; each is cached, so a
# rerun only loads. Usage: tools/queue_cpu.sh [wait-for-pid]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ $# -ge 1 ]; then while kill -0 "$1" 2>/dev/null; do sleep 20; done; fi
step() { echo "=== $(date +%T) $*" ; "$@" ; echo "=== $(date +%T) rc=$?"; }
step $PY -c "
from ungerlib import config, levers
print(levers.lever_table(config.profile('cpu', 'Beauty')).to_string())"
step $PY -m ungerlib.reproduce --profile cpu --only 01 02 03 --datasets Sports Toys
for ds in Sports Toys; do
step $PY -c "
from ungerlib import config, levers
print(levers.lever_table(config.profile('cpu', '$ds'), [levers.LITERAL, levers.ADOPTED]).to_string())"
done
