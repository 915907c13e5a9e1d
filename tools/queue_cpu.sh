#!/usr/bin/env bash
# Session helper (not part of the build): the cpu-profile jobs of this session, one after another.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
step() { echo "=== $(date +%T) $*" ; "$@" ; echo "=== $(date +%T) rc=$?"; }
step $PY -m ungerlib.reproduce --profile cpu --only 01 02 03 --datasets Beauty
step $PY -c "
from ungerlib import config, levers
print(levers.lever_table(config.profile('cpu', 'Beauty')).to_string())"
step $PY -m ungerlib.reproduce --profile cpu --only 01 02 03 --datasets Sports Toys
