"""Token shards on disk, as other stages read them.

A shard ``PREFIX`` is Megatron's IndexedDataset pair ``PREFIX.bin``/``PREFIX.idx``, a
document table ``PREFIX.docs.parquet`` (one row per document: doc, source, line, id, label,
n_tokens) and ``PREFIX.manifest.json``, written last: a shard without its manifest is
incomplete and is never read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SHARD_FORMAT = "megatron-split/shard/v1"
REQUIRED_KEYS = (
    "format", "tokenizer", "vocab_size", "eod_id", "documents", "tokens", "inputs", "skipped",
)  # fmt: skip


class ShardError(ValueError):
    """A shard that is missing, incomplete or of another format."""


def manifest_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.manifest.json")


def parts_dir(prefix: str | Path) -> Path:
    """Where finished partitions wait for the merge (removed once it has published)."""
    return Path(f"{prefix}.parts")


def task_marker(prefix: str | Path, task: int, tasks: int) -> Path:
    """Written last by task `task` of a `tasks`-task tokenize array (gone once merged)."""
    return parts_dir(prefix) / f"task-{task}-of-{tasks}.done.json"


def doc_table_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.docs.parquet")


def doc_table_schema(partition_keys: int | None = None) -> Any:
    """The columns of a shard's document table (one row per document, in shard order); with
    ``partition_keys``, those of a tokenize partition's, which the merge numbers and splits
    into one table per json key: no ``doc``, and the tokens of each key."""
    import pyarrow as pa

    described = [("source", pa.string()), ("line", pa.int64()), ("id", pa.string()),
                 ("label", pa.string())]  # fmt: skip
    if partition_keys is None:
        return pa.schema([("doc", pa.int64()), *described, ("n_tokens", pa.int64())])
    return pa.schema(described + [(f"n_tokens_{k}", pa.int64()) for k in range(partition_keys)])


def heldout_range(split: str, n_docs: int) -> tuple[int, int]:
    """Documents [first, last) of a shard that megatron's `split` holds out for validation."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(_valid_split(split)))
    if matrix[1] is None:
        return n_docs, n_docs
    # The same rounding as BlendedMegatronDatasetBuilder._build_megatron_dataset_splits.
    return int(round(matrix[1][0] * float(n_docs))), int(round(matrix[1][1] * float(n_docs)))


def _valid_split(split: str) -> str:
    """`split` if it is one to three non-negative shares with a positive sum. (megatron's
    parser reads any digits in it, so "a,b,c" or "0,0,0" would give NaN shares.)"""
    try:
        shares = [float(share) for share in split.split(",")]
    except ValueError:
        shares = []
    if not (1 <= len(shares) <= 3 and all(0 <= s < math.inf for s in shares) and sum(shares)):
        raise ShardError(
            f"split {split!r}: expected train,held-out,test shares like '98,2,0' "
            "(non-negative numbers, not all zero)"
        )
    return split


def read_manifest(prefix: str | Path) -> dict[str, Any]:
    """The manifest of shard `prefix`, checked for format, keys and its data files."""
    path = manifest_path(prefix)
    if not path.is_file():
        raise ShardError(
            f"no shard at {prefix}: {path} is missing (not written, or the writer did not finish)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ShardError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ShardError(f"{path}: format is {found!r}, expected {SHARD_FORMAT!r}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ShardError(f"{path}: missing keys {missing}")
    for suffix in (".bin", ".idx", ".docs.parquet"):
        if not Path(f"{prefix}{suffix}").is_file():
            raise ShardError(f"{path}: its data file {prefix}{suffix} is missing")
    return manifest


def open_indexed_dataset(prefix: str | Path) -> Any:
    """megatron.core's IndexedDataset over a checked shard."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    if read_manifest(prefix)["documents"] == 0:  # an empty .bin, which cannot be mapped
        raise ShardError(f"shard {prefix} holds no documents")
    return IndexedDataset(str(prefix))


def read_doc_table(prefix: str | Path) -> Any:
    """The shard's document table as a pyarrow Table."""
    import pyarrow.parquet as pq

    read_manifest(prefix)
    return pq.read_table(doc_table_path(prefix))
