"""Planning a tokenize run: cut the work into partitions, number their lines, and hash
what they read.

Partitions are contiguous runs of the input stream (whole files, or line-aligned byte
ranges of plain JSONL files), so merging them in order gives the same shard whatever the
number of workers. Cutting reads a line at each cut; the line number a piece starts at
takes counting the newlines before it, which is done only for the partitions a process
writes (an array task counts in the files its partitions read, not the whole corpus). The
inputs' hashes are taken separately, so that a fresh run starts its workers first and
hashes the files for the manifest while they encode.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from data_prep.readers import COMPRESSED_SUFFIXES, PARQUET_SUFFIXES, InputUnit

# Many partitions per worker even out uneven encoding costs (code vs prose): the last to
# finish runs ~1/16 of a worker's share alone. Each costs a few files, none synced.
PARTITIONS_PER_WORKER = 16

_COUNT_BLOCK = 8 << 20  # newlines are counted a block at a time (a bool array each)
_MAP_BYTES = 1 << 20  # files from this size up are memory-mapped, smaller ones read
_SEEK_BLOCK = 64 << 10  # read at a cut, to find the newline that ends its line


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

    def numbered(self, indices: Iterable[int]) -> Plan:
        """This plan with the line numbers of partitions ``indices`` counted: one pass over
        each file they start a piece inside, up to the last such piece."""
        starts: dict[str, set[int]] = defaultdict(set)  # file -> its uncounted pieces' starts
        for index in set(indices):
            for unit in self.partitions[index]:
                if unit.first_line is None:
                    starts[unit.path].add(unit.start)
        first_lines: dict[tuple[str, int], int] = {}  # (file, start) -> line number
        for path, offsets in starts.items():
            ordered = sorted(offsets)
            for offset, before in zip(ordered, _lines_before(path, ordered), strict=True):
                first_lines[path, offset] = 1 + before
        partitions = [[replace(u, first_line=first_lines[u.path, u.start])
                       if (u.path, u.start) in first_lines else u for u in units]
                      for units in self.partitions]  # fmt: skip
        return Plan(self.sizes, partitions)

    @cached_property
    def input_files(self) -> list[InputFile]:
        """Every input file with its sha256, as the manifest lists them (hashed once, on
        every core: hashing releases the GIL)."""
        with ThreadPoolExecutor(max(1, min(len(self.sizes), os.cpu_count() or 1))) as pool:
            hashes = pool.map(sha256_of, self.sizes)
            return [InputFile(path, size, sha256) for (path, size), sha256
                    in zip(self.sizes.items(), hashes, strict=True)]  # fmt: skip


def make_plan(units: list[InputUnit], partitions: int) -> Plan:
    """Group the units into at most `partitions` contiguous parts of about equal bytes; a
    piece that starts inside a file has no line number yet (see ``Plan.numbered``)."""
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
        for start, end in zip([0, *cuts], [*cuts, None], strict=True):
            first_line = 1 if start == 0 else None
            pieces.append((base + start, InputUnit(unit.path, unit.kind, start, end,
                                                   first_line, unit.root)))  # fmt: skip
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


def _line_starts_after(path: str, offsets: list[int]) -> list[int]:
    """For each offset, where the first line after it starts; none past the last line,
    and none twice. Reads from each offset to the next newline only."""
    cuts: list[int] = []
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for offset in sorted(offsets):
            if cuts and offset < cuts[-1]:
                continue  # its line starts at the last cut or after it: found below
            handle.seek(offset)
            while (block := handle.read(_SEEK_BLOCK)) and (newline := block.find(b"\n")) < 0:
                offset += len(block)
            if not block:
                break  # no newline after it: the file's last line
            cut = offset + newline + 1  # past the last cut: the offset is not before it
            if cut >= size:
                break
            cuts.append(cut)
    return cuts


def _lines_before(path: str, offsets: list[int]) -> list[int]:
    """How many newlines come before each of the (sorted) offsets in a file."""
    counts, counted, lines = [], 0, 0
    with _mapped(path) as data:
        bytes_ = np.frombuffer(data, dtype=np.uint8)
        for offset in offsets:
            for block in range(counted, offset, _COUNT_BLOCK):
                stop = min(block + _COUNT_BLOCK, offset)
                lines += int(np.count_nonzero(bytes_[block:stop] == 10))
            counted = offset
            counts.append(lines)
        del bytes_  # a view of the map, which closes next
    return counts


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
