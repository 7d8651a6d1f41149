"""Planning a tokenize run: hash every input once and cut the work into partitions.

Partitions are contiguous runs of the input stream (whole files, or line-aligned byte
ranges of plain JSONL files), so merging them in order gives the same shard whatever the
number of workers. The same read that hashes a plain JSONL file finds its cut points.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass

from data_prep.readers import COMPRESSED_SUFFIXES, PARQUET_SUFFIXES, InputUnit

# Many partitions per worker even out uneven encoding costs (code vs prose): the last to
# finish runs ~1/16 of a worker's share alone. Each costs a few files, none synced.
PARTITIONS_PER_WORKER = 16

_BLOCK = 8 << 20


@dataclass(frozen=True)
class InputFile:
    """An input file as the manifest lists it."""

    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Plan:
    inputs: list[InputFile]
    partitions: list[list[InputUnit]]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.inputs)

    @property
    def text_bytes(self) -> int | None:
        """Bytes of document text to read, when known (not for compressed or Parquet)."""
        if any(_compressed(f.path) or f.path.endswith(PARQUET_SUFFIXES) for f in self.inputs):
            return None
        return self.total_bytes


def make_plan(units: list[InputUnit], partitions: int) -> Plan:
    """Hash the inputs and group their units into at most `partitions` contiguous parts."""
    sizes = [os.path.getsize(u.path) for u in units]
    total = sum(sizes)
    boundaries = [total * k // partitions for k in range(1, partitions)] if total else []
    inputs, pieces = [], []  # pieces: (global start offset, unit)
    base = 0
    for unit, size in zip(units, sizes, strict=True):
        splittable = unit.kind == "jsonl" and not _compressed(unit.path)
        inside = [b - base for b in boundaries if base < b < base + size] if splittable else []
        digest, cuts = _hash_and_cut(unit.path, size, inside)
        inputs.append(InputFile(unit.path, size, digest))
        starts = [(0, 1), *cuts]
        ends = [offset for offset, _ in cuts] + [None]
        for (start, line), end in zip(starts, ends, strict=True):
            piece = InputUnit(unit.path, unit.kind, start, end, line, unit.root)
            pieces.append((base + start, piece))
        base += size
    grouped: list[list[InputUnit]] = [[] for _ in range(partitions)]
    for start, piece in pieces:
        grouped[bisect.bisect_right(boundaries, start)].append(piece)
    return Plan(inputs, [group for group in grouped if group])


def _compressed(path: str) -> bool:
    return any(path.lower().endswith(suffix) for suffix in COMPRESSED_SUFFIXES)


def _hash_and_cut(path: str, size: int, cut_after: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """sha256 of a file, and for each offset the (start, line number) of the next line."""
    digest = hashlib.sha256()
    cuts: list[tuple[int, int]] = []
    pending = sorted(cut_after)
    lines_before, block_start = 0, 0
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            while pending and pending[0] < block_start + len(block):
                newline = block.find(b"\n", max(pending[0] - block_start, 0))
                if newline < 0:
                    pending[0] = block_start + len(block)  # keep looking in the next block
                    break
                cut = block_start + newline + 1
                line = 1 + lines_before + block.count(b"\n", 0, newline + 1)
                if (not cuts or cut > cuts[-1][0]) and cut < size:
                    cuts.append((cut, line))
                pending.pop(0)
            lines_before += block.count(b"\n")
            block_start += len(block)
    return digest.hexdigest(), cuts
