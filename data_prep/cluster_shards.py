"""Per-cluster shards: each cluster's documents copied into a shard of its own.

Why copy rather than index into the shared shards: a cluster shard is an ordinary shard
(``.bin/.idx`` + doc table + manifest), so megatron.core's ``BlendedMegatronDatasetBuilder``
builds the trunk (a blend of the k cluster shards at token-share weights) and each branch
(one cluster shard) with no change to the training core, and its ``split`` carves the same
held-out documents out of a cluster in the trunk's blend, in the branch and in evaluation.
Megatron's datasets can only select contiguous document ranges of a shard, so indexing into
the shared shards would need a dataset class of our own and random reads across the whole
corpus for every branch. The price is one extra copy of the tokens on disk, written once.

Documents go into their cluster shard in a seeded random order, so the held-out tail that
megatron's split takes from each shard is a random sample of the cluster, not the last
source file. Each cluster's doc table keeps the source row (source file, line, id, label,
n_tokens) plus ``origin_shard`` / ``origin_doc``: the way back to the input shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep.doc_texts import ShardDocuments
from data_prep.indexed import ShardBuilder
from data_prep.shards import SHARD_FORMAT, doc_table_path, manifest_path


def cluster_prefix(out: Path, cluster: int, k: int) -> Path:
    return out / f"cluster_{cluster:0{max(2, len(str(k - 1)))}d}"


def group_by_cluster(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(documents in write order, grouped by cluster; start offsets of each cluster, k+1)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    grouped = order[np.argsort(labels[order], kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))])
    return grouped, bounds


def write_cluster_shards(
    documents: ShardDocuments,
    labels: np.ndarray,
    k: int,
    out: Path,
    seed: int,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Write one shard per cluster under `out`; returns their manifests, in cluster order."""
    from data_prep.progress import progress_bar

    grouped, bounds = group_by_cluster(labels, k, seed)
    out.mkdir(parents=True, exist_ok=True)
    dtype = documents.datasets[0].index.dtype
    prefixes = [cluster_prefix(out, c, k) for c in range(k)]
    for prefix in prefixes:  # a stale manifest would make a half-written shard look complete
        manifest_path(prefix).unlink(missing_ok=True)
    table = _source_table(documents)
    bar = progress_bar(
        total=len(labels),
        unit="doc",
        desc="cluster shards",
        disable=not progress,
        mininterval=0.5,
    )
    manifests = []
    with bar:
        for cluster, prefix in enumerate(prefixes):  # one open shard at a time, whatever k
            members = grouped[bounds[cluster] : bounds[cluster + 1]]
            temp = atomic.temp_path(prefix)
            builder = ShardBuilder(f"{temp}.bin", dtype=dtype)
            tokens = 0
            for doc in members:
                sequences = documents.sequences(int(doc))
                lengths = np.array([len(s) for s in sequences])
                builder.add_documents(sequences, lengths, np.array([len(sequences)]))
                tokens += int(lengths.sum())
            builder.finalize(f"{temp}.idx")
            _write_doc_table(table, members, Path(f"{temp}.docs"))
            for suffix, temp_suffix in (
                (".bin", ".bin"),
                (".idx", ".idx"),
                (".docs.parquet", ".docs"),
            ):
                atomic.publish(f"{temp}{temp_suffix}", f"{prefix}{suffix}")
            manifests.append(
                _shard_manifest(documents, prefix, dtype, len(members), tokens, cluster, extra)
            )
            atomic.write_json(manifest_path(prefix), manifests[-1])
            bar.update(len(members))
    return manifests


def _shard_manifest(
    documents: ShardDocuments,
    prefix: Path,
    dtype: Any,
    n_docs: int,
    tokens: int,
    cluster: int,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    source = documents.manifests[0]
    return {
        "format": SHARD_FORMAT,
        "prefix": str(prefix),
        "tokenizer": source["tokenizer"],
        "vocab_size": source["vocab_size"],
        "eod_id": source["eod_id"],
        "dtype": np.dtype(dtype).name,
        "append_eod": source.get("append_eod"),
        "documents": n_docs,
        "tokens": tokens,
        "inputs": [str(p) for p in documents.prefixes],
        "skipped": {},
        "doc_table": doc_table_path(prefix).name,
        "cluster": cluster,
        **(extra or {}),
    }


def _source_table(documents: ShardDocuments) -> Any:
    """All input doc tables as one, in global document order, with the way back to them."""
    import pyarrow as pa

    tables = []
    for shard in range(len(documents.prefixes)):
        table = documents.doc_table(shard)
        origin = pa.array(np.full(table.num_rows, shard, dtype=np.int32))
        tables.append(table.append_column("origin_shard", origin))
    table = pa.concat_tables(tables)
    return table.rename_columns(["origin_doc" if n == "doc" else n for n in table.column_names])


def _write_doc_table(table: Any, members: np.ndarray, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = table.take(pa.array(members, type=pa.int64()))
    rows = rows.add_column(0, "doc", pa.array(np.arange(len(members), dtype=np.int64)))
    with open(path, "wb") as handle:
        pq.write_table(rows, handle)
