#!/usr/bin/env bash
# The GPU measurements of issue 22 and the gpu-short profile, as one script for a lent GPU machine:
#   1. CIFAR-10 in torchvision's format from the JPEG pack (materialize.py --jpeg; the pack that travels there);
#   2. one training epoch of ShuffleNet v2 1.0x on the tensor pipeline, fixed and learned, with the GPU's
#      utilisation sampled by nvidia-smi every 100 ms while it runs (goal: at most 3 s, busy at least 90%);
#   3. the gpu-short profile (notebook 04: v1 g8 and v2 1.0x, fixed/none/relaxed/l12, 3 seeds, 8 runs sharing the
#      GPU), whose results, figures and the executed notebook are copied under $OUT when it ends.
# Each step writes under $OUT as soon as it ends, so a run stopped part-way keeps what it finished, and the profile's
# runs resume if the script is started again on the same machine.
#
#   OUT=/tmp/out DATA_PACK=shared-data bash benchmarks/gpu_short.sh   # DATA_PACK: folder with cifar10_jpeg.npz,
#                                                                     # materialize.py (copied in, see data/README.md)
# A dry run on a CPU (tiny settings, the same steps):
#   DEVICE=cpu DRY=1 OUT=/tmp/dry DATA_PACK=../shared/data PYTHON=.venv/bin/python bash benchmarks/gpu_short.sh
set -euo pipefail
: "${OUT:?set OUT to the folder for the results}"
: "${DATA_PACK:?set DATA_PACK to the folder holding cifar10_jpeg.npz and materialize.py}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
"$PY" -c "import torch; from aslib.utils.runtime import describe_device; print(describe_device('$DEVICE'), torch.__version__)" \
    | tee "$OUT/device.txt"

[ -d data/cifar-10-batches-py ] || "$PY" "$DATA_PACK/materialize.py" --jpeg --only cifar10 data | tee "$OUT/data.txt"

if [ -n "${DRY:-}" ]; then
    EPOCH_ARGS=(--train-images 256 --repeats 1 --model cifar-cpu)
    PROFILE_ARGS=(-p epochs=1 -p max_train_samples=64 -p "stages_repeats=[1, 1, 1]" -p batch_size=16 -p "seeds=[0]"
                  -p speed_repeats=1 --runs-dir "$OUT/runs" --results-dir "$OUT/results")
else
    EPOCH_ARGS=(--train-images 45000 --repeats 3 --warmup 1 --batch-size 256 --model v2)
    PROFILE_ARGS=()
fi
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 100 > "$OUT/gpu_utilisation.csv" &
    SAMPLER=$!
    trap 'kill $SAMPLER 2> /dev/null || true' EXIT
fi
"$PY" benchmarks/training_throughput.py --device "$DEVICE" --setups after "${EPOCH_ARGS[@]}" \
    --out "$OUT/epoch_time.txt"
[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2> /dev/null || true

[ -e figures/gpu-short ] && HAD_FIGURES=1 || HAD_FIGURES=
"$PY" -m aslib.runner.reproduce --profile gpu-short --jobs 1 "${PROFILE_ARGS[@]}" | tee "$OUT/reproduce.txt" || true
if [ -n "${DRY:-}" ] && [ -z "$HAD_FIGURES" ]; then  # the dry run's figures are no results: moved out of the tree
    mkdir -p "$OUT/figures" && mv figures/gpu-short "$OUT/figures/" 2> /dev/null || true
fi
if [ -z "${DRY:-}" ]; then  # a dry run wrote there directly, leaving the repository's results alone
    mkdir -p "$OUT/results" "$OUT/figures"
    cp -r results/gpu-short "$OUT/results/" 2> /dev/null || true
    cp -r figures/gpu-short "$OUT/figures/" 2> /dev/null || true
    cp runs/gpu-short/*.ipynb "$OUT/" 2> /dev/null || true
fi
