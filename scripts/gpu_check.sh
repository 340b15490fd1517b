#!/usr/bin/env bash
# GPU checks on one H100/H200 with PyTorch preinstalled and no network (about 5-10 minutes):
#   bash scripts/gpu_check.sh [OUT_JSON]
# Installs the project without touching torch (the wheel cache must hold transformers, peft, accelerate),
# then runs scripts/gpu_check.py. The JSON is what the README's GPU table quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/results/gpu_check.json}"
python3 -c "import transformers, peft, accelerate" 2>/dev/null || python3 -m pip install -q -e . --no-deps
python3 scripts/gpu_check.py --out "$out"
