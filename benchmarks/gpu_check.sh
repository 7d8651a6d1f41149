#!/usr/bin/env bash
# One GPU session, one script: install carried wheels, run the GPU tests, measure bf16 MFU.
# Results land in $OUT (on the device machine) or benchmarks/results/ (elsewhere).
#   Carry megatron-core as a wheel in .whl/ where it is not installed (see README).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/msplit-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/msplit-site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$RESULTS/gpu_info.txt"
python3 -c "import torch, megatron.core; print('torch', torch.__version__, 'megatron-core', megatron.core.__version__)" | tee -a "$RESULTS/gpu_info.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/megatron_split/test_gpu.py \
    tests/megatron_split/test_model.py 2>&1 | tail -40 | tee "$RESULTS/gpu_tests.log"
timeout 300 python3 benchmarks/gpu_mfu.py --json "$RESULTS/gpu_mfu.json" 2>&1 | tail -60 | tee "$RESULTS/gpu_mfu.log"
