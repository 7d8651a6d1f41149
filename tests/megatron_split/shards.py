"""Small real Megatron shards for tests: a learnable token process written with megatron.core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_shard(
    prefix: Path, n_docs: int = 200, vocab: int = 256, eod: int = 0, seed: int = 0
) -> str:
    """Documents from a fixed random bigram process (so loss can fall), EOD-terminated."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(rng.dirichlet(np.full(vocab - 1, 0.05), size=vocab - 1), axis=1)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    tokens = 0
    for _ in range(n_docs):
        length = int(rng.integers(40, 400))
        doc = np.empty(length, dtype=np.int64)
        doc[0] = rng.integers(vocab - 1)
        draws = rng.random(length)
        for i in range(1, length):
            doc[i] = min(np.searchsorted(cumulative[doc[i - 1]], draws[i]), vocab - 2)
        ids = np.append(doc + 1, eod)  # ids 1..vocab-1, 0 is EOD
        builder.add_document(ids, [len(ids)])
        tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    manifest = {
        "format": "megatron-split/shard/v1",
        "tokenizer": "synthetic-bigram",
        "vocab_size": vocab,
        "eod_id": eod,
        "documents": n_docs,
        "tokens": tokens,
    }
    Path(f"{prefix}.manifest.json").write_text(json.dumps(manifest))
    return str(prefix)
