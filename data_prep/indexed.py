"""Writing Megatron's indexed shards (``.bin`` + ``.idx``, the MMIDIDX format) without torch.

megatron.core reads these files (``IndexedDataset``) and its ``IndexedDatasetBuilder`` writes
them, but importing it imports torch and megatron.core: seconds of start-up that a
tokenization job, which needs neither, would pay in every process. The files written here
are byte for byte those of megatron.core's builder (tests/data_prep/test_indexed.py).

``.bin``: the token ids of every sequence, back to back, in the shard's dtype.
``.idx``: a header (magic, version 1, dtype code, sequence count, document count), then
the sequences' lengths (int32), their byte offsets in ``.bin`` (int64), and the document
boundaries: 0 and the number of sequences at each document's end (int64).
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# The dtype codes of megatron.core.datasets.indexed_dataset.DType.
DTYPE_CODES = {
    np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
    np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}  # fmt: skip
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, documents


class ShardBuilder:
    """Appends documents (one or more sequences each) to a ``.bin``; ``finalize`` writes the
    ``.idx``. The index stays in memory as one int32/int64 array per appended batch."""

    def __init__(self, bin_path: str | Path, dtype: type[np.number] | np.dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"an indexed shard cannot hold {self.dtype}")
        self._bin = open(bin_path, "wb")  # noqa: SIM115 (closed by finalize)
        self._lengths: list[np.ndarray] = []  # int32, per sequence
        self._document_ends: list[np.ndarray] = []  # int64, sequences so far at a document end
        self._sequences = 0

    def add_documents(
        self, sequences: list[np.ndarray], lengths: np.ndarray, ends: np.ndarray
    ) -> None:
        """Append a batch: `sequences` in order (sentences or whole documents), `lengths`
        theirs, and `ends` the number of this batch's sequences at each document's end."""
        for tokens in sequences:  # an array already of the shard's dtype is written as it is
            self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).data)
        self._lengths.append(np.asarray(lengths, dtype=np.int32))
        self._document_ends.append(self._sequences + np.asarray(ends, dtype=np.int64))
        self._sequences += len(lengths)

    def add_shard(self, prefix: str | Path) -> None:
        """Append a finished shard of the same dtype."""
        dtype, lengths, document_indices = read_index(f"{prefix}.idx")
        if dtype != self.dtype:
            raise ValueError(f"{prefix}.idx holds {dtype}, this shard {self.dtype}")
        self._bin.flush()
        with open(f"{prefix}.bin", "rb") as source:
            try:  # in the kernel: no pass of the tokens through Python's buffers
                while os.copy_file_range(source.fileno(), self._bin.fileno(), 1 << 30):
                    pass
            except OSError:  # e.g. across filesystems on an older kernel; goes on from here
                shutil.copyfileobj(source, self._bin, 1 << 24)
        self._lengths.append(lengths)
        self._document_ends.append(self._sequences + document_indices[1:])
        self._sequences += len(lengths)

    def discard(self) -> None:
        """Close and delete the ``.bin`` written so far (a shard that will not be finished)."""
        self._bin.close()
        Path(self._bin.name).unlink(missing_ok=True)

    def finalize(self, idx_path: str | Path) -> None:
        self._bin.close()
        lengths = np.concatenate([np.zeros(0, np.int32), *self._lengths])
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
        pointers *= self.dtype.itemsize
        document_indices = np.concatenate([np.zeros(1, np.int64), *self._document_ends])
        with open(idx_path, "wb") as index:
            index.write(_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, DTYPE_CODES[self.dtype],
                                     len(lengths), len(document_indices)))  # fmt: skip
            for array in (lengths, pointers, document_indices):
                index.write(array.tobytes(order="C"))


def read_index(idx_path: str | Path) -> tuple[np.dtype, np.ndarray, np.ndarray]:
    """A shard's dtype, sequence lengths (int32) and document indices (int64, from 0)."""
    with open(idx_path, "rb") as index:
        magic, version, code, sequences, documents = _HEADER.unpack(index.read(_HEADER.size))
        if magic != INDEX_MAGIC or version != INDEX_VERSION:
            raise ValueError(f"{idx_path}: not a Megatron indexed shard (version 1) index")
        dtype = next((d for d, c in DTYPE_CODES.items() if c == code), None)
        if dtype is None:
            raise ValueError(f"{idx_path}: unknown dtype code {code}")
        lengths = np.fromfile(index, dtype=np.int32, count=sequences)
        index.seek(8 * sequences, os.SEEK_CUR)  # the pointers follow from the lengths
        document_indices = np.fromfile(index, dtype=np.int64, count=documents)
    return dtype, lengths, document_indices
