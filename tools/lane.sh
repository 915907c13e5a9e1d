#!/usr/bin/env bash
# Session helper (not part of the build): run the commands of a job file one after another, after an
# optional process has ended. Lines starting with "wait-file F" wait until file F exists; "touch F"
# lines mark a point other lanes can wait for. Usage: tools/lane.sh JOBFILE [wait-for-pid]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 2 ]; then while kill -0 "$2" 2>/dev/null; do sleep 20; done; fi
while IFS= read -r line; do
  [ -z "$line" ] && continue
  case "$line" in \#*) continue;; esac
  if [[ "$line" == wait-file* ]]; then f=${line#wait-file }; while [ ! -e "$f" ]; do sleep 30; done; continue; fi
  echo "=== $(date +%T) $line"
  bash -c "$line"
  echo "=== $(date +%T) rc=$?"
done < "$1"
