"""Documents of one or more shards, addressed by one global index, as text or token ids.

Embedding and clustering see the shards a tokenize run wrote as one sequence of documents:
shard 0's documents, then shard 1's, and so on. A document's text is its first
``max_tokens`` tokens decoded (EOD removed), which is what an embedder with a bounded input
length reads anyway and keeps decoding cost independent of document length.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.shards import ShardError, open_indexed_dataset, read_doc_table, read_manifest
from data_prep.tokenizers import Tokenizer, load_tokenizer


class ShardDocuments:
    """The documents of `prefixes`, in order; texts need the shards' tokenizer to load."""

    def __init__(self, prefixes: Sequence[str], max_tokens: int = 256):
        if not prefixes:
            raise ShardError("no shards given")
        self.prefixes = [str(p) for p in prefixes]
        self.max_tokens = int(max_tokens)
        self.manifests = [read_manifest(p) for p in self.prefixes]
        tokenizers = {json.dumps(m["tokenizer"], sort_keys=True) for m in self.manifests}
        if len(tokenizers) != 1:
            raise ShardError(f"shards {self.prefixes} were written with different tokenizers")
        self.datasets = [open_indexed_dataset(p) for p in self.prefixes]
        for prefix, manifest, dataset in zip(
            self.prefixes, self.manifests, self.datasets, strict=True
        ):
            if len(dataset.document_indices) - 1 != manifest["documents"]:
                raise ShardError(
                    f"{prefix}.idx holds {len(dataset.document_indices) - 1} documents, its "
                    f"manifest field 'documents' says {manifest['documents']}"
                )
        counts = [int(m["documents"]) for m in self.manifests]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.eod_id = int(self.manifests[0]["eod_id"])
        self._tokenizer: Tokenizer | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.manifests[0]["tokenizer"])
        return self._tokenizer

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, document number within it) of global document `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"document {index} out of range 0..{len(self) - 1}")
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return shard, int(index - self.offsets[shard])

    def sequences(self, index: int) -> list[np.ndarray]:
        """The token sequences (one, or one per sentence) of global document `index`."""
        shard, doc = self.locate(index)
        dataset = self.datasets[shard]
        first, last = dataset.document_indices[doc], dataset.document_indices[doc + 1]
        return [dataset[int(s)] for s in range(first, last)]

    def head_tokens(self, index: int) -> np.ndarray:
        """The first `max_tokens` tokens of a document, EOD tokens removed."""
        tokens = np.concatenate(self.sequences(index) or [np.empty(0, dtype=np.int64)])
        tokens = tokens[tokens != self.eod_id]
        return tokens[: self.max_tokens]

    def texts(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        decode = self.tokenizer.decode
        return [decode(self.head_tokens(int(i)).tolist()) for i in indices]

    def token_counts(self) -> np.ndarray:
        """Tokens of every document (all sequences, EOD included), in global order."""
        counts = []
        for dataset in self.datasets:
            per_sequence = np.concatenate(
                [[0], np.cumsum(dataset.sequence_lengths, dtype=np.int64)]
            )
            counts.append(np.diff(per_sequence[dataset.document_indices]))
        return np.concatenate(counts)

    def labels(self) -> np.ndarray:
        """Each document's label from the doc tables (empty string where none)."""
        columns = [read_doc_table(p).column("label").to_pylist() for p in self.prefixes]
        return np.array([label or "" for column in columns for label in column], dtype=object)

    def doc_table(self, shard: int) -> Any:
        return read_doc_table(self.prefixes[shard])

    def identity(self) -> list[dict[str, Any]]:
        """What embeddings were computed from: each shard's prefix, size and content hash."""
        return [
            {
                "prefix": str(Path(p).resolve()),
                "documents": int(m["documents"]),
                "tokens": int(m["tokens"]),
                "fingerprint": m.get("fingerprint") or _idx_hash(p),
            }
            for p, m in zip(self.prefixes, self.manifests, strict=True)
        ]


def _idx_hash(prefix: str) -> str:
    """A shard's identity when its manifest carries no fingerprint: the hash of its index."""
    return hashlib.sha256(Path(f"{prefix}.idx").read_bytes()).hexdigest()[:32]
