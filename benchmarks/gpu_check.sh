#!/usr/bin/env bash
# The GPU check, one prepared script of under 9 minutes: the gpu-marked tests, then the CUDA throughput
# of dinov2_vits14, dinov2_vitl14, meta-chm-v1-huge and meta-chm-v2 (random weights) in fp32 and bf16.
# Run from the repository root on a machine with a CUDA GPU and PyTorch with CUDA:
#     PYTHON=python3 OUT=gpu-check bash benchmarks/gpu_check.sh
# canopy is imported from this tree (PYTHONPATH); its other dependencies must be installed
# (`pip install -e .[dev]` without touching the CUDA build of torch). Figures go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CANOPY_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 150 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_device.py 2>&1 | tee "$OUT/gpu-tests.txt"
tests=${PIPESTATUS[0]}
timeout 360 "$PYTHON" benchmarks/gpu_throughput.py --size 2048 --seconds 3 > "$OUT/gpu-throughput.json" 2> "$OUT/gpu-throughput.log"
bench=$?
tail -n 40 "$OUT/gpu-throughput.log"
echo "gpu tests exit $tests, throughput exit $bench; figures in $OUT/gpu-throughput.json"
exit $(( tests || bench ))
