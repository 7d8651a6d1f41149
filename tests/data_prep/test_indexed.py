"""Shards written without torch are byte for byte megatron.core's IndexedDatasetBuilder's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

from data_prep.indexed import ShardBuilder, read_index


def random_documents(seed: int, n: int, vocab: int) -> list[list[np.ndarray]]:
    """Documents of 1-3 sequences (sentences), some of them empty."""
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, vocab, rng.integers(0, 9)) for _ in range(rng.integers(1, 4))]
            for _ in range(n)]  # fmt: skip


def megatron_shard(prefix: Path, parts: list[list[list[np.ndarray]]], dtype) -> None:
    """Each part written as a shard of its own, then merged with add_index, as
    Megatron-LM's preprocessing merges its workers' outputs."""
    for i, documents in enumerate(parts):
        builder = IndexedDatasetBuilder(f"{prefix}_{i}.bin", dtype=dtype)
        for sequences in documents:
            builder.add_document(np.concatenate(sequences), [len(s) for s in sequences])
        builder.finalize(f"{prefix}_{i}.idx")
    merged = IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for i in range(len(parts)):
        merged.add_index(f"{prefix}_{i}")
    merged.finalize(f"{prefix}.idx")


def our_shard(prefix: Path, parts: list[list[list[np.ndarray]]], dtype) -> None:
    for i, documents in enumerate(parts):
        builder = ShardBuilder(f"{prefix}_{i}.bin", dtype=dtype)
        for batch in (documents[:7], documents[7:]):  # batches of several documents
            if batch:
                sequences = [s for sequences in batch for s in sequences]
                ends = np.cumsum([len(sequences) for sequences in batch])
                builder.add_documents(sequences, np.array([len(s) for s in sequences]), ends)
        builder.finalize(f"{prefix}_{i}.idx")
    merged = ShardBuilder(f"{prefix}.bin", dtype=dtype)
    for i in range(len(parts)):
        merged.add_shard(f"{prefix}_{i}")
    merged.finalize(f"{prefix}.idx")


@pytest.mark.parametrize("dtype,vocab", [(np.uint16, 50257), (np.int32, 151936)])
def test_partitions_merged_are_megatron_cores_bytes(tmp_path: Path, dtype, vocab: int) -> None:
    parts = [random_documents(seed, n, vocab) for seed, n in ((0, 30), (1, 0), (2, 12))]
    megatron_shard(tmp_path / "megatron", parts, dtype)
    our_shard(tmp_path / "ours", parts, dtype)
    for name in ("", "_0", "_1", "_2"):
        for suffix in (".bin", ".idx"):
            ours = (tmp_path / f"ours{name}{suffix}").read_bytes()
            assert ours == (tmp_path / f"megatron{name}{suffix}").read_bytes(), name + suffix
    dataset = IndexedDataset(str(tmp_path / "ours"))
    documents = [d for part in parts for d in part]
    assert len(dataset.document_indices) == len(documents) + 1
    flat = [s for sequences in documents for s in sequences]
    assert all(dataset[i].tolist() == s.tolist() for i, s in enumerate(flat))


def test_read_index_and_what_it_refuses(tmp_path: Path) -> None:
    our_shard(tmp_path / "s", [random_documents(3, 5, 100)], np.uint16)
    dtype, lengths, document_indices = read_index(tmp_path / "s.idx")
    dataset = IndexedDataset(str(tmp_path / "s"))
    assert dtype == np.uint16
    assert lengths.tolist() == dataset.sequence_lengths.tolist()
    assert document_indices.tolist() == dataset.document_indices.tolist()
    (tmp_path / "bad.idx").write_bytes(b"not an index" * 4)
    with pytest.raises(ValueError, match="not a Megatron indexed shard"):
        read_index(tmp_path / "bad.idx")
    builder = ShardBuilder(tmp_path / "wide.bin", dtype=np.int32)
    with pytest.raises(ValueError, match="holds uint16"):
        builder.add_shard(tmp_path / "s")
    with pytest.raises(ValueError, match="cannot hold"):
        ShardBuilder(tmp_path / "u32.bin", dtype=np.uint32)
