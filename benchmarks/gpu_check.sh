#!/usr/bin/env bash
# GPU readiness check, a few minutes on a machine with CUDA:
#   1. the test suite's CUDA-marked tests (elsewhere they are skipped, with the reason);
#   2. a small quick-preset search of LeNet-5 on MNIST-5k with device="cuda", then the
#      same search on the CPU, printing seconds and candidate counts per stage for both;
#   3. the batched trainer (symloss.batched.train_many) against training one model at a
#      time on CUDA, for 1, 4, 16 runs of MLP/digits and LeNet-5/MNIST-5k, and the
#      formulations of one stacked step (vmap, baddbmm, grouped convolution) on CUDA.
# Usage: benchmarks/gpu_check.sh   (PYTHON=path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"

"$PYTHON" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("no CUDA device here (torch.cuda.is_available() is False); nothing to check")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

echo "== CUDA-marked tests =="
timeout 150 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/

echo "== LeNet-5 / MNIST-5k search: cuda, then cpu =="
timeout 240 "$PYTHON" benchmarks/search_speed.py --only mnist --devices cuda cpu --jobs 1

echo "== batched trainer vs one at a time: cuda =="
timeout 300 "$PYTHON" benchmarks/batched_speed.py --device cuda --repeats 3
timeout 120 "$PYTHON" benchmarks/batched_speed.py --device cuda --formulations
