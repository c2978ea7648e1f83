#!/usr/bin/env bash
# The GPU measurements of the speed goals, as one short script for a lent GPU machine (no data set needed):
#   1. inference of the hardened learned shuffle against the fixed one, ShuffleNet v2 1.0x, batch 1, 64, 256;
#   2. batched graph matching (noisy Erdos-Renyi n = 50, 1024 instances at once) against one FAQ call each;
#   3. the accuracy-against-wall-time benchmark, l12 one instance at a time on the GPU (FAQ, 2-opt on the CPU).
# Each writes its figures under $OUT as soon as it ends, so a run stopped part-way keeps what it finished.
#
#   OUT=benchmarks/results/gpu bash benchmarks/gpu_checks.sh    # PYTHON (default python3): torch, scipy, pandas
# A dry run of the script itself, on a CPU:
#   DEVICE=cpu INSTANCES=1 BATCH=8 REPEATS=1 OUT=/tmp/dry PYTHON=.venv/bin/python bash benchmarks/gpu_checks.sh
set -euo pipefail
: "${OUT:?set OUT to the folder for the results}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
INSTANCES=${INSTANCES:-10}
BATCH=${BATCH:-1024}
REPEATS=${REPEATS:-15}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"

# resolve_device refuses "cuda" with a clear error when no CUDA device is visible
"$PY" -c "import torch; from aslib.utils.runtime import describe_device; print(describe_device('$DEVICE'), torch.__version__)" \
    | tee "$OUT/device.txt"

"$PY" benchmarks/inference_speed.py --model shufflenet_v2_1.0 --device "$DEVICE" --batch-sizes 1 64 256 \
    --inference-images 256 --repeats "$REPEATS" --no-progress --output-dir "$OUT" | tee "$OUT/inference_speed.txt"

"$PY" benchmarks/graph_matching_speed.py --n 50 --batch "$BATCH" --device "$DEVICE" \
    | tee "$OUT/graph_matching_speed.txt"

"$PY" benchmarks/qap_benchmark.py --device "$DEVICE" --instances "$INSTANCES" --out "$OUT/qap_benchmark.csv"
