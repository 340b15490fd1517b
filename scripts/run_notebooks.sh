#!/usr/bin/env bash
# Rerun every notebook (or the ones named) at default size and store its outputs in place, timing each:
#
#   bash scripts/run_notebooks.sh                       # all nine, in course order
#   bash scripts/run_notebooks.sh 03 05                 # only these
#   LONGLORA_MINI_SMOKE=1 bash scripts/run_notebooks.sh --no-store   # time the smoke size, outputs not kept
#
# The figures need matplotlib's inline backend, so MPLBACKEND is unset for the kernel. The runtimes it prints are
# what notebooks/README.md lists. tests/test_notebook_outputs.py then checks the stored outputs.
set -euo pipefail
cd "$(dirname "$0")/../notebooks"
store=1
picked=()
for arg in "$@"; do
  case "$arg" in
    --no-store) store=0 ;;
    [0-9][0-9]) picked+=("$arg") ;;
    *) echo "run_notebooks.sh: unknown argument $arg (notebook numbers like 03, or --no-store)" >&2; exit 2 ;;
  esac
done
export HF_HUB_OFFLINE=1
for nb in [0-9][0-9]_*.ipynb; do
  if [ ${#picked[@]} -gt 0 ] && [[ ! " ${picked[*]} " =~ " ${nb:0:2} " ]]; then continue; fi
  start=$(date +%s)
  if [ "$store" = 1 ]; then
    env -u MPLBACKEND jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 "$nb"
  else
    env -u MPLBACKEND jupyter nbconvert --to notebook --execute --stdout --ExecutePreprocessor.timeout=3600 "$nb" >/dev/null 2>&1
  fi
  echo "$nb: $(( $(date +%s) - start )) s"
done
