"""Planning a tokenize run: cut the work into partitions, and hash what they read.

Partitions are contiguous runs of the input stream (whole files, or line-aligned byte
ranges of plain JSONL files), so merging them in order gives the same shard whatever the
number of workers. Cutting reads only the newlines before each cut (for its line number);
the inputs' hashes are taken separately, so that a fresh run starts its workers first and
hashes the files for the manifest while they encode.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from data_prep.readers import COMPRESSED_SUFFIXES, PARQUET_SUFFIXES, InputUnit

# Many partitions per worker even out uneven encoding costs (code vs prose): the last to
# finish runs ~1/16 of a worker's share alone. Each costs a few files, none synced.
PARTITIONS_PER_WORKER = 16

_COUNT_BLOCK = 8 << 20  # newlines are counted a block at a time (a bool array each)
_MAP_BYTES = 1 << 20  # files from this size up are memory-mapped, smaller ones read


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
    sizes: dict[str, int]  # every input file, in input order
    partitions: list[list[InputUnit]]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def text_bytes(self) -> int | None:
        """Bytes of document text to read, when known (not for compressed or Parquet)."""
        if any(_compressed(path) or path.endswith(PARQUET_SUFFIXES) for path in self.sizes):
            return None
        return self.total_bytes

    @cached_property
    def input_files(self) -> list[InputFile]:
        """Every input file with its sha256, as the manifest lists them (hashed once)."""
        return [InputFile(path, size, sha256_of(path)) for path, size in self.sizes.items()]


def make_plan(units: list[InputUnit], partitions: int) -> Plan:
    """Group the units into at most `partitions` contiguous parts of about equal bytes."""
    sizes = {u.path: os.path.getsize(u.path) for u in units}
    total = sum(sizes.values())
    boundaries = [total * k // partitions for k in range(1, partitions)] if total else []
    pieces = []  # (global start offset, unit)
    base = 0
    for unit in units:
        size = sizes[unit.path]
        splittable = unit.kind == "jsonl" and not _compressed(unit.path)
        inside = [b - base for b in boundaries if base < b < base + size] if splittable else []
        cuts = _line_starts_after(unit.path, inside) if inside else []
        starts = [(0, 1), *cuts]
        ends = [offset for offset, _ in cuts] + [None]
        for (start, line), end in zip(starts, ends, strict=True):
            piece = InputUnit(unit.path, unit.kind, start, end, line, unit.root)
            pieces.append((base + start, piece))
        base += size
    grouped: list[list[InputUnit]] = [[] for _ in range(partitions)]
    for start, piece in pieces:
        grouped[bisect.bisect_right(boundaries, start)].append(piece)
    return Plan(sizes, [group for group in grouped if group])


def sha256_of(path: str, start: int = 0, end: int | None = None) -> str:
    """sha256 of a file's bytes [start, end)."""
    with _mapped(path) as data:
        return hashlib.sha256(data[start:end]).hexdigest()


def _compressed(path: str) -> bool:
    return any(path.lower().endswith(suffix) for suffix in COMPRESSED_SUFFIXES)


def _line_starts_after(path: str, offsets: list[int]) -> list[tuple[int, int]]:
    """For each offset, the (start, line number) of the first line after it; none past
    the last line, and none twice."""
    cuts: list[tuple[int, int]] = []
    with _mapped(path) as data:
        bytes_ = np.frombuffer(data, dtype=np.uint8)
        counted, lines = 0, 1  # lines: the number of the line starting at `counted`
        for offset in sorted(offsets):
            newline = data.obj.find(b"\n", offset)  # the map's (or bytes') find copies nothing
            if newline < 0 or newline + 1 >= len(data):
                break
            cut = newline + 1
            if cuts and cut <= cuts[-1][0]:
                continue
            for block in range(counted, cut, _COUNT_BLOCK):
                lines += int(np.count_nonzero(bytes_[block : min(block + _COUNT_BLOCK, cut)] == 10))
            counted = cut
            cuts.append((cut, lines))
        del bytes_  # a view of the map, which closes next
    return cuts


@contextmanager
def _mapped(path: str) -> Iterator[memoryview]:
    """A file's bytes, memory-mapped (hashing and counting copy nothing); a small file's
    read at once (mapping costs more than copying it, and an empty one cannot be mapped)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _MAP_BYTES or not size:
            yield memoryview(handle.read())
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                yield view
            finally:
                view.release()
