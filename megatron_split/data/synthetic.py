"""Generated shards: real Megatron .bin/.idx files of a learnable random token process.

For tests, benchmarks and smoke runs that need token data of a known kind and no corpus: the
documents follow a fixed sparse random bigram process (each token has a few likely
successors), so a model's loss can fall well below log(vocab), the table stays small at
any vocabulary size, and the same seed always writes the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_synthetic_shard(
    prefix: Path,
    n_docs: int = 200,
    vocab: int = 256,
    eod: int = 0,
    seed: int = 0,
    doc_length: tuple[int, int] = (40, 400),
    successors: int = 8,
) -> str:
    """Write a complete shard at ``prefix``; token ids are 1..vocab-1 and ``eod`` is 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_prep.indexed import ShardBuilder
    from data_prep.shards import SHARD_FORMAT, doc_table_path, doc_table_schema, manifest_path

    rng = np.random.default_rng(seed)
    next_ids = rng.integers(1, vocab, size=(vocab, successors))
    cumulative = np.cumsum(rng.dirichlet(np.full(successors, 0.5), size=vocab), axis=1)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab <= 65536 else np.int32
    builder = ShardBuilder(f"{prefix}.bin", dtype=dtype)
    lengths = []
    for _ in range(n_docs):
        length = int(rng.integers(*doc_length))
        doc = np.empty(length + 1, dtype=np.int64)
        doc[0] = rng.integers(1, vocab)
        choices = rng.random(length)
        for i in range(1, length):
            row = doc[i - 1]
            pick = min(np.searchsorted(cumulative[row], choices[i]), successors - 1)
            doc[i] = next_ids[row, pick]
        doc[length] = eod
        builder.add_documents([doc], np.array([len(doc)]), np.array([1]))
        lengths.append(len(doc))
    builder.finalize(f"{prefix}.idx")
    pq.write_table(
        pa.table(
            {
                "doc": list(range(n_docs)),
                "source": [f"synthetic-bigram:{seed}"] * n_docs,
                "line": list(range(1, n_docs + 1)),
                "id": [f"doc{i}" for i in range(n_docs)],
                "label": [f"bigram-{seed}"] * n_docs,
                "n_tokens": lengths,
            },
            schema=doc_table_schema(),
        ),
        doc_table_path(prefix),
    )
    manifest = {
        "format": SHARD_FORMAT,
        "tokenizer": {"kind": "synthetic-bigram", "seed": seed},
        "vocab_size": vocab,
        "eod_id": eod,
        "documents": n_docs,
        "tokens": sum(lengths),
        "inputs": [],
        "skipped": {},
    }
    manifest_path(prefix).write_text(json.dumps(manifest))  # last: the shard is complete
    return str(prefix)
