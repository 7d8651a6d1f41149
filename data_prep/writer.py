"""Parallel, resumable, atomic writer of Megatron indexed shards.

Each worker streams one partition of the input (see :mod:`data_prep.plan`): it reads and
checks records, encodes them in large batches with the tokenizer's batch encoder, and
appends raw token arrays to a shard of its own (:mod:`data_prep.indexed`, no torch import
in any process). Finished partitions are kept under ``PREFIX.parts/`` with a marker holding
their fingerprint, so a restarted job skips them; the merge concatenates them in input order
and publishes each shard's files, its document table and, last, its manifest. On a cluster
the partitions are shared out over the tasks of a job array (``task`` of ``tasks``: every
``tasks``-th partition, no merge), and one run with ``tasks == 1`` then merges them
(writing any partition still missing).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep.indexed import ShardBuilder
from data_prep.plan import PARTITIONS_PER_WORKER, InputFile, Plan, make_plan, sha256_of
from data_prep.readers import (
    CONTROL_CHAR_POLICIES,
    ON_ERROR,
    REASONS,
    BadInputError,
    Document,
    EmptyInputError,
    InputUnit,
    ReaderConfig,
    check_some_documents,
    expand_inputs,
    read_documents,
)
from data_prep.sentences import SentenceSplitter, SentenceSplitterConfig
from data_prep.shards import (
    SHARD_FORMAT,
    doc_table_path,
    doc_table_schema,
    manifest_path,
    parts_dir,
    task_marker,
)
from data_prep.tokenizers import Tokenizer, load_tokenizer, parse_spec

EXECUTORS = ("auto", "threads", "processes")


@dataclass
class TokenizeConfig:
    """Everything that decides the shards' content (plus how many processes make them)."""

    inputs: list[str]
    output_prefix: str
    tokenizer: str | dict[str, Any]
    json_keys: tuple[str, ...] = ("text",)
    id_key: str = "id"
    label_key: str = "label"
    append_eod: bool = False
    split_sentences: bool = False
    language: str = "english"
    keep_newlines: bool = False  # with split_sentences: SentenceSplitterConfig.keep_newlines
    workers: int = 1
    partitions: int | None = None  # default: PARTITIONS_PER_WORKER per worker
    on_error: str = "stop"
    control_chars: str = "keep"  # readers.CONTROL_CHAR_POLICIES
    executor: str = "auto"  # workers as threads or processes; see ShardWriter._executor
    max_doc_mb: float = 32.0
    batch_mb: float = 2.0  # text handed to one encode_batch call
    # Task `task` of `tasks` (a job array) writes partitions task, task + tasks, ... and stops
    # before the merge; give every task, and the merge, the same `partitions`.
    task: int = 0
    tasks: int = 1
    progress: bool = True
    log_interval: int | None = None  # a progress line each time this many more documents are done

    def __post_init__(self) -> None:
        self.json_keys = tuple(self.json_keys)
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {self.on_error!r}")
        if self.control_chars not in CONTROL_CHAR_POLICIES:
            raise ValueError(
                f"control_chars must be one of {CONTROL_CHAR_POLICIES}, not {self.control_chars!r}"
            )
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, not {self.executor!r}")
        if self.workers < 1 or (self.partitions is not None and self.partitions < 1):
            raise ValueError("workers and partitions must be >= 1")
        if not 0 <= self.task < self.tasks:
            raise ValueError(f"task must be in 0..tasks-1, got task {self.task} of {self.tasks}")
        if self.tasks > 1 and self.partitions is None:
            raise ValueError("tasks > 1 needs partitions: the same number in every task")
        if not self.json_keys or len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"json_keys must be distinct and non-empty: {self.json_keys}")
        if self.log_interval is not None and self.log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, not {self.log_interval}")

    def build(self) -> ShardWriter:
        return ShardWriter(self)

    def splitter_config(self) -> SentenceSplitterConfig:
        return SentenceSplitterConfig(self.language, self.keep_newlines)

    def reader_config(self) -> ReaderConfig:
        return ReaderConfig(self.json_keys, self.id_key, self.label_key,
                            int(self.max_doc_mb * (1 << 20)), self.control_chars)  # fmt: skip

    def shard_prefixes(self) -> list[str]:
        """One shard per json key: PREFIX alone, or PREFIX_KEY for several keys."""
        if len(self.json_keys) == 1:
            return [self.output_prefix]
        return [f"{self.output_prefix}_{key}" for key in self.json_keys]


@dataclass
class PartitionStats:
    """Counts of one partition (or, summed, of a run)."""

    documents_read: int = 0
    documents: int = 0
    tokens: list[int] = field(default_factory=list)  # per json key
    text_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    control_chars: int = 0  # documents written that held control characters (kept or stripped)

    def add(self, other: PartitionStats) -> None:
        self.documents_read += other.documents_read
        self.documents += other.documents
        self.control_chars += other.control_chars
        self.tokens = [
            a + b for a, b in zip(self.tokens or [0] * len(other.tokens), other.tokens, strict=True)
        ]
        self.text_bytes += other.text_bytes
        self.skipped = dict(Counter(self.skipped) + Counter(other.skipped))


@dataclass(frozen=True)
class PartitionJob:
    config: TokenizeConfig
    index: int
    units: list[InputUnit]
    directory: str
    tokenizer_spec: dict[str, Any]
    content: str  # fingerprint of the settings and the tokenizer (_content_fingerprint)

    @cached_property
    def fingerprint(self) -> str:
        """Of the settings, the tokenizer and the bytes this partition reads: hashed by
        whoever asks first (its worker, or a later run that finds its marker)."""
        units = [[asdict(u), sha256_of(u.path, u.start, u.end)] for u in self.units]
        return _digest([self.content, units])

    def prefix(self, key_index: int) -> str:
        return os.path.join(self.directory, f"part-{self.index:05d}.key{key_index}")

    @property
    def marker(self) -> Path:
        return Path(self.directory) / f"part-{self.index:05d}.done.json"

    @property
    def doc_table(self) -> Path:
        return Path(self.directory) / f"part-{self.index:05d}.docs.arrow"

    def owns(self, name: str) -> bool:
        """Whether a file name under the parts directory is one of this partition's."""
        return name.lstrip(".").startswith(f"part-{self.index:05d}.")

    def files(self, n_keys: int) -> list[Path]:
        """The partition's files but its marker."""
        shards = [Path(f"{self.prefix(k)}{suffix}") for k in range(n_keys)
                  for suffix in (".bin", ".idx")]  # fmt: skip
        return [*shards, self.doc_table]

    def finished(self) -> PartitionStats | None:
        """Stats of a partition an earlier run completed with the same fingerprint, whose
        files still hold what its marker says they held."""
        try:
            marker = json.loads(self.marker.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if marker.get("fingerprint") != self.fingerprint:
            return None
        files = self.files(len(self.config.json_keys))
        if marker.get("files") != {f.name: _checksum(f) for f in files}:
            return None  # cut short or lost in a crash: partitions are written without fsync
        return PartitionStats(**marker["stats"])


class ShardWriter:
    """Runs one tokenize job: plan, write partitions in parallel, merge, publish."""

    def __init__(self, config: TokenizeConfig):
        self.config = config

    def run(self) -> list[dict[str, Any]]:
        """Write (or find up to date) every shard; returns their manifests."""
        started = time.perf_counter()
        tokenizer, plan, content, jobs = self.plan()
        current = self._up_to_date(plan, content)
        if current is not None:
            _log(f"shards up to date: {', '.join(self.config.shard_prefixes())}")
            return current
        config = self.config
        mine = jobs[config.task :: config.tasks]
        # Only this run's leftovers: other tasks of the array may be writing theirs.
        _remove_temp_files(self.parts_dir, mine)
        try:
            if config.tasks > 1:
                self._run_task(mine, jobs, plan, tokenizer)
                return []
            inputs = _in_background(lambda: plan.input_files)  # while the workers encode
            with _ShardMerge(config, jobs, tokenizer.token_dtype()) as merge:
                stats = self._run_jobs(mine, plan, tokenizer, merge.add_finished)
                check_some_documents(config.inputs, stats.documents, stats.skipped)
                manifests = self._manifests(stats, plan, inputs.result(), tokenizer, content)
                merge.publish(manifests)
        except EmptyInputError:
            shutil.rmtree(self.parts_dir)  # partitions of nothing: none worth resuming from
            raise
        except BadInputError as error:  # what finished is kept: say so, and how to start over
            written = sum(job.marker.is_file() for job in jobs)
            if not written:
                raise
            raise BadInputError(error.record, f"\n{written} partition(s) before it are kept in "
                                f"{self.parts_dir}/: a rerun resumes from them (`rm -r "
                                f"{self.parts_dir}` starts over)") from None  # fmt: skip
        shutil.rmtree(self.parts_dir)
        _print_summary(manifests, time.perf_counter() - started)
        return manifests

    def _run_task(
        self, mine: list[PartitionJob], jobs: list[PartitionJob], plan: Plan, tokenizer: Tokenizer
    ) -> None:
        """One task of a job array: its partitions, and a marker saying they are written."""
        config = self.config
        stats = self._run_jobs(mine, plan, tokenizer, lambda index: None)
        done = {"partitions": [job.index for job in mine], "stats": asdict(stats)}
        atomic.write_json(task_marker(config.output_prefix, config.task, config.tasks), done)
        _log(f"task {config.task} of {config.tasks}: {len(mine)} of {len(jobs)} partitions in "
             f"{self.parts_dir}/; the same command without --task/--tasks merges them")  # fmt: skip

    @property
    def parts_dir(self) -> Path:
        return parts_dir(self.config.output_prefix)

    def plan(self) -> tuple[Tokenizer, Plan, str, list[PartitionJob]]:
        """Tokenizer, plan, content fingerprint and one job per partition."""
        config = self.config
        tokenizer = _cached_tokenizer(parse_spec(config.tokenizer))  # workers reuse (or fork) it
        if config.split_sentences:  # nltk and the punkt parameters, loaded before workers fork
            config.splitter_config().build()
        plan = make_plan(
            expand_inputs(config.inputs),
            config.partitions or PARTITIONS_PER_WORKER * config.workers,
        )
        plan = plan.numbered(range(config.task, len(plan.partitions), config.tasks))
        content = _content_fingerprint(config, tokenizer)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        jobs = [PartitionJob(config, i, units, str(self.parts_dir), tokenizer.spec, content)
                for i, units in enumerate(plan.partitions)]  # fmt: skip
        return tokenizer, plan, content, jobs

    def _up_to_date(self, plan: Plan, content: str) -> list[dict[str, Any]] | None:
        """The published manifests, if every shard was made from these very inputs. Only
        then are the inputs hashed before the run: a fresh run hashes them as it goes."""
        manifests = []
        for prefix in self.config.shard_prefixes():
            try:
                manifests.append(json.loads(manifest_path(prefix).read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                return None
        fingerprint = _run_fingerprint(content, plan.input_files)
        return manifests if all(m.get("fingerprint") == fingerprint for m in manifests) else None

    def _run_jobs(
        self,
        jobs: list[PartitionJob],
        plan: Plan,
        tokenizer: Tokenizer,
        finished: Callable[[int], None],
    ) -> PartitionStats:
        """Write the jobs' partitions not already written; ``finished(index)`` is told of
        each written one (those of an earlier run first)."""
        total = PartitionStats(tokens=[0] * len(self.config.json_keys))
        todo = []
        # An earlier run's partitions are checked on every worker's core (hashing their
        # inputs and checksumming their files release the GIL), and each is told of in
        # order as soon as it is checked, while its files are still in the page cache.
        with ThreadPoolExecutor(self.config.workers) as pool:
            for job, done in zip(jobs, pool.map(PartitionJob.finished, jobs), strict=True):
                if done is None:
                    todo.append(job)
                else:
                    total.add(done)
                    finished(job.index)
        if len(todo) < len(jobs):
            _log(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} partitions already written")
        progress = _Progress(plan.text_bytes, total, self.config.progress, self.config.log_interval)
        try:
            if self.config.workers == 1 or len(todo) <= 1:
                for job in todo:
                    total.add(write_partition(job, progress.update))
                    finished(job.index)
            elif self._executor(tokenizer) == "threads":
                total.add(_run_threads(todo, self.config.workers, progress, finished))
            else:
                total.add(_run_pool(todo, self.config.workers, progress, finished))
        finally:
            progress.close()
        return total

    def _executor(self, tokenizer: Tokenizer) -> str:
        """Threads when encoding releases the GIL and little Python runs per token.

        HF tokenizers encode without the GIL, so threads share one tokenizer (its merge
        tables stay in cache once, not once per process) and its thread pool; sentence
        splitting is Python code, which needs processes to run in parallel.
        """
        if self.config.executor != "auto":
            return self.config.executor
        threads = tokenizer.encodes_in_threads and not self.config.split_sentences
        return "threads" if threads else "processes"

    def _manifests(
        self,
        stats: PartitionStats,
        plan: Plan,
        inputs: list[InputFile],
        tokenizer: Tokenizer,
        content: str,
    ) -> list[dict[str, Any]]:
        """The manifest of each shard (one per json key) of a run that wrote ``stats``."""
        config = self.config
        return [
            {
                "format": SHARD_FORMAT,
                "prefix": str(prefix),
                "json_key": config.json_keys[key_index],
                "label_key": config.label_key,
                "tokenizer": tokenizer.spec,
                "tokenizer_sha256": _tokenizer_hashes(tokenizer.spec),
                "vocab_size": tokenizer.vocab_size,
                "eod_id": tokenizer.eod_id,
                "dtype": np.dtype(tokenizer.token_dtype()).name,
                "append_eod": config.append_eod,
                "split_sentences": config.split_sentences,
                "language": config.language if config.split_sentences else None,
                "keep_newlines": config.keep_newlines if config.split_sentences else None,
                "documents": stats.documents,
                "documents_read": stats.documents_read,
                "tokens": stats.tokens[key_index],
                "text_bytes": stats.text_bytes,
                "skipped": {r: stats.skipped.get(r, 0) for r in REASONS if stats.skipped.get(r)},
                "control_chars": {
                    "policy": config.control_chars,
                    "documents": stats.control_chars,
                },  # fmt: skip
                "inputs": [f.as_dict() for f in inputs],
                "partitions": len(plan.partitions),
                "doc_table": doc_table_path(prefix).name,
                "fingerprint": _run_fingerprint(content, inputs),
            }
            for key_index, prefix in enumerate(config.shard_prefixes())
        ]


_ROW_GROUP = 65536  # rows of a shard's document table written at once


class _ShardMerge:
    """A run's shards in the making, in ``PREFIX.parts/``: each partition is appended, in
    input order, as soon as it and every one before it are written, so that copying
    overlaps encoding and little is left when the last partition is done. ``publish``
    moves the files into place, each shard's manifest last; leaving the block unpublished
    (a bad record, an interrupt) deletes them."""

    def __init__(self, config: TokenizeConfig, jobs: list[PartitionJob], dtype: Any):
        import pyarrow.parquet as pq

        self.prefixes = config.shard_prefixes()
        directory = parts_dir(config.output_prefix)
        # beside the partitions (part-*); a killed run's merged files are overwritten
        self.temps = [directory / f"merged.key{k}" for k in range(len(self.prefixes))]
        self.builders = [ShardBuilder(f"{temp}.bin", dtype=dtype) for temp in self.temps]
        self.schema = doc_table_schema()
        self.tables = [pq.ParquetWriter(f"{temp}.docs", self.schema) for temp in self.temps]
        self.jobs = jobs
        self.finished: set[int] = set()  # partition indices written, appended or not
        self.appended = 0  # jobs[: appended] are in the shards
        self.documents = 0  # in the shards so far
        self.published = False

    def __enter__(self) -> _ShardMerge:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.published:
            return
        for table, builder, temp in zip(self.tables, self.builders, self.temps, strict=True):
            table.close()
            builder.discard()
            Path(f"{temp}.docs").unlink(missing_ok=True)

    def add_finished(self, index: int) -> None:
        """Partition ``index`` is written: append every partition now next in order."""
        self.finished.add(index)
        while self.appended < len(self.jobs) and self.jobs[self.appended].index in self.finished:
            self._append(self.jobs[self.appended])
            self.appended += 1

    def _append(self, job: PartitionJob) -> None:
        import pyarrow as pa

        described = self.schema.names[1:-1]  # a partition table's, between doc and n_tokens
        for key_index, builder in enumerate(self.builders):
            builder.add_shard(job.prefix(key_index))
        with pa.memory_map(str(job.doc_table)) as source:  # read in place, a slice at a time
            rows = pa.ipc.open_file(source).read_all()
            for start in range(0, rows.num_rows, _ROW_GROUP):
                part = rows.slice(start, _ROW_GROUP)
                first = self.documents + start
                doc = _int64_column(np.arange(first, first + part.num_rows), pa)
                kept = [part.column(name) for name in described]
                for key_index, table in enumerate(self.tables):  # the same documents each
                    tokens = part.column(f"n_tokens_{key_index}")
                    columns = [doc, *kept, tokens]
                    table.write_table(pa.Table.from_arrays(columns, schema=self.schema))
            self.documents += rows.num_rows

    def publish(self, manifests: list[dict[str, Any]]) -> None:
        """Every partition appended: publish the shards, each manifest last."""
        if self.appended != len(self.jobs):
            raise RuntimeError(f"{len(self.jobs) - self.appended} partitions never merged")
        for prefix, temp, builder, table, manifest in zip(
            self.prefixes, self.temps, self.builders, self.tables, manifests, strict=True
        ):
            Path(prefix).parent.mkdir(parents=True, exist_ok=True)
            manifest_path(prefix).unlink(missing_ok=True)  # incomplete until republished
            builder.finalize(f"{temp}.idx")
            table.close()
            for suffix, published in ((".bin", ".bin"), (".idx", ".idx"),
                                      (".docs", ".docs.parquet")):  # fmt: skip
                atomic.publish(f"{temp}{suffix}", f"{prefix}{published}")
            atomic.write_json(manifest_path(prefix), manifest)
        self.published = True


# ---------------------------------------------------------------- partition worker

_WORKER_CACHE: dict[str, Any] = {}


def write_partition(job: PartitionJob, report: Callable[[int, int, int], None]) -> PartitionStats:
    """Write one partition's shards, doc table and (last) its done-marker."""
    import pyarrow as pa

    config = job.config
    fingerprint = job.fingerprint  # of the input as it is before it is read
    tokenizer = _cached_tokenizer(job.tokenizer_spec)
    splitter = config.splitter_config().build() if config.split_sentences else None
    n_keys = len(config.json_keys)
    stats = PartitionStats(tokens=[0] * n_keys)
    skipped: Counter[str] = Counter()
    dtype = tokenizer.token_dtype()
    temps = [f"{job.prefix(k)}.tmp" for k in range(n_keys)]
    builders = [ShardBuilder(f"{t}.bin", dtype=dtype) for t in temps]
    table_temp = job.doc_table.with_name(job.doc_table.name + ".tmp")
    # Arrow's file format, which the merge reads in place (Parquet took encoding and decoding)
    table_writer = pa.ipc.new_file(str(table_temp), doc_table_schema(n_keys))
    batch_bytes = int(config.batch_mb * (1 << 20))
    try:
        for batch in _batches(job.units, config, skipped, batch_bytes):
            n_tokens = [
                _encode_into(builder, [d.texts[k] for d in batch], tokenizer, splitter, config)
                for k, builder in enumerate(builders)
            ]
            table_writer.write_table(_doc_rows(batch, n_tokens, pa))
            batch_tokens = int(sum(n.sum() for n in n_tokens))
            stats.documents += len(batch)
            stats.control_chars += sum(d.control_chars for d in batch)
            stats.text_bytes += sum(d.n_bytes for d in batch)
            stats.tokens = [t + int(n.sum()) for t, n in zip(stats.tokens, n_tokens, strict=True)]
            report(len(batch), batch_tokens, sum(d.n_bytes for d in batch))
    finally:
        table_writer.close()
    # No fsync (ten a partition took 7% of a run): the marker records each file's size and
    # checksum instead, and a later run reuses only a partition whose files match them.
    for temp, builder, k in zip(temps, builders, range(n_keys), strict=True):
        builder.finalize(f"{temp}.idx")
        os.replace(f"{temp}.bin", f"{job.prefix(k)}.bin")
        os.replace(f"{temp}.idx", f"{job.prefix(k)}.idx")
    os.replace(table_temp, job.doc_table)
    stats.skipped = dict(skipped)
    stats.documents_read = stats.documents + sum(skipped.values())
    files = {f.name: _checksum(f) for f in job.files(n_keys)}
    marker = {"fingerprint": fingerprint, "stats": asdict(stats), "files": files}
    atomic.write_json(job.marker, marker, sync=False)
    return stats


def _batches(
    units: list[InputUnit], config: TokenizeConfig, skipped: Counter[str], batch_bytes: int
) -> Iterator[list[Document]]:
    """Accepted documents in batches of about `batch_bytes` of text; bad ones counted."""
    batch: list[Document] = []
    size = 0
    for document in read_documents(units, config.reader_config(), config.on_error, skipped):
        batch.append(document)
        size += document.n_bytes
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode_into(
    builder: ShardBuilder,
    texts: list[str],
    tokenizer: Tokenizer,
    splitter: SentenceSplitter | None,
    config: TokenizeConfig,
) -> np.ndarray:
    """Encode a batch of documents and append them; returns tokens per document."""
    if splitter is None:
        pieces, counts = texts, [1] * len(texts)
    else:
        split = [splitter.split(text) for text in texts]
        pieces = [sentence for sentences in split for sentence in sentences]
        counts = [len(sentences) for sentences in split]
    encoded = tokenizer.encode_arrays(pieces)
    ends = np.cumsum(counts)  # one past each document's last piece
    starts = ends - np.asarray(counts)  # each document's first piece
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if config.append_eod:  # after each document's last piece
        eod = np.array([tokenizer.eod_id], dtype=builder.dtype)
        encoded = [ids for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
                   for ids in (*encoded[a:b], eod)]  # fmt: skip
        lengths[ends - 1] += 1
    # the tokens are copied once, into the shard's dtype
    tokens = np.concatenate(encoded, dtype=builder.dtype, casting="unsafe")
    builder.add_documents([tokens], lengths, ends)
    return np.add.reduceat(lengths, starts)


def _doc_rows(batch: list[Document], n_tokens: list[np.ndarray], pa: Any) -> Any:
    columns = [
        _string_column([d.source for d in batch], pa),
        _int64_column(np.fromiter((d.line for d in batch), np.int64, len(batch)), pa),
        _string_column([d.doc_id for d in batch], pa),
        _string_column([d.label for d in batch], pa),
        *(_int64_column(counts, pa) for counts in n_tokens),
    ]
    return pa.Table.from_arrays(columns, schema=doc_table_schema(len(n_tokens)))


# Columns are built from their buffers: pyarrow's converters of Python and numpy values
# first import pandas to look for its types, which costs every worker process 0.3 s.
def _int64_column(values: np.ndarray, pa: Any) -> Any:
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


_STRING_BYTES = 2**31 - 1  # what a string array's 32-bit offsets reach


def _string_column(values: list[str | None], pa: Any) -> Any:
    """A string column: one array, or chunks of about half its 32-bit offsets' reach."""
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    ends = np.cumsum(lengths)
    if not len(values) or ends[-1] <= _STRING_BYTES:
        return _string_chunk(values, encoded, lengths, pa)
    cuts = (np.flatnonzero(np.diff(ends // (_STRING_BYTES // 2 + 1))) + 1).tolist()
    bounds = zip([0, *cuts], [*cuts, len(values)], strict=True)
    chunks = [_string_chunk(values[a:b], encoded[a:b], lengths[a:b], pa) for a, b in bounds]
    return pa.chunked_array(chunks)


def _string_chunk(
    values: list[str | None], encoded: list[bytes], lengths: np.ndarray, pa: Any
) -> Any:
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:], dtype=np.int32)
    present = np.fromiter((v is not None for v in values), bool, len(values))
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def _cached_tokenizer(spec: dict[str, Any]) -> Tokenizer:
    """One loaded tokenizer per process (forked workers inherit the parent's)."""
    tokenizer = _WORKER_CACHE.get(_cache_key(spec))
    if tokenizer is None:
        tokenizer = load_tokenizer(spec)
        _WORKER_CACHE[_cache_key(spec)] = _WORKER_CACHE[_cache_key(tokenizer.spec)] = tokenizer
    return tokenizer


def _cache_key(spec: dict[str, Any]) -> str:
    # The files' size and mtime too: a tokenizer retrained in place is a new tokenizer.
    stats = [(os.stat(spec[k]).st_size, os.stat(spec[k]).st_mtime_ns)
             for k in ("path", "merges") if k in spec]  # fmt: skip
    return json.dumps([spec, stats], sort_keys=True)


# ---------------------------------------------------------------- pool and progress

_progress_queue: Any = None
_TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def _init_worker(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue
    # One process per core: the tokenizer's own thread pool would only oversubscribe.
    os.environ[_TOKENIZERS_PARALLELISM] = "false"


def _pool_write(job: PartitionJob) -> PartitionStats:
    return write_partition(job, lambda *delta: _progress_queue.put(delta))


def _run_threads(
    jobs: list[PartitionJob],
    workers: int,
    progress: _Progress,
    finished: Callable[[int], None],
) -> PartitionStats:
    total = PartitionStats(tokens=[0] * len(jobs[0].config.json_keys))
    lock = threading.Lock()

    def report(*delta: int) -> None:
        with lock:
            progress.update(*delta)

    # HF tokenizers serialise concurrent batch calls that use its own thread pool; with it
    # off, each thread encodes on one core, in parallel (the GIL is released meanwhile).
    previous = os.environ.get(_TOKENIZERS_PARALLELISM)
    os.environ[_TOKENIZERS_PARALLELISM] = "false"
    pool = ThreadPoolExecutor(min(workers, len(jobs)))
    futures = {pool.submit(write_partition, job, report): job.index for job in jobs}
    errors: dict[int, BadInputError] = {}
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            try:
                total.add(future.result())
                finished(futures[future])
            except BadInputError as error:  # partitions after this one need not run
                errors[futures[future]] = error
                for other, index in futures.items():
                    if index > min(errors):
                        other.cancel()
    finally:
        pool.shutdown(cancel_futures=True)  # on error, start no further partition
        if previous is None:
            os.environ.pop(_TOKENIZERS_PARALLELISM)
        else:
            os.environ[_TOKENIZERS_PARALLELISM] = previous
    if errors:  # partitions are contiguous in input order: the lowest holds the first defect
        raise errors[min(errors)]
    return total


def _run_pool(
    jobs: list[PartitionJob],
    workers: int,
    progress: _Progress,
    finished: Callable[[int], None],
) -> PartitionStats:
    context = mp.get_context("fork")
    queue = context.SimpleQueue()
    total = PartitionStats(tokens=[0] * len(jobs[0].config.json_keys))
    errors: dict[int, BadInputError] = {}
    with context.Pool(min(workers, len(jobs)), _init_worker, (queue,)) as pool:
        pending = {job.index: pool.apply_async(_pool_write, (job,)) for job in jobs}
        # After a bad record, only the partitions before it can hold an earlier one.
        while any(index < min(errors, default=math.inf) for index in pending):
            while not queue.empty():
                progress.update(*queue.get())
            for index, result in [item for item in pending.items() if item[1].ready()]:
                del pending[index]
                try:
                    total.add(result.get())
                    finished(index)
                except BadInputError as error:
                    errors[index] = error
            time.sleep(0.01)
        if errors:  # the pool's exit terminates the partitions still running
            raise errors[min(errors)]
        while not queue.empty():  # every delta was sent before its partition's result
            progress.update(*queue.get())
    return total  # the pool's exit stops the idle workers at once (close and join poll)


_LINE_SECONDS = 30.0  # between progress lines where stderr is not a terminal


class _Progress:
    """Progress on stderr: documents, input bytes and tokens.

    On a terminal, a tqdm bar; elsewhere (a log file, a pipe), whose lines the bar's
    carriage returns would garble, a line about every `_LINE_SECONDS`; with
    ``log_interval``, a line each time another that many documents are done, instead of
    either. Updates come a batch of documents at a time, so the parent's cost stays a few
    operations per batch. Counts include partitions an earlier run wrote; rates are this
    run's.
    """

    def __init__(
        self,
        total_bytes: int | None,
        done: PartitionStats,
        enabled: bool,
        log_interval: int | None = None,
    ):
        self.documents, self.tokens, self.bytes = done.documents, sum(done.tokens), done.text_bytes
        self.enabled, self.log_interval = enabled, log_interval
        self.first_tokens, self.first_bytes = self.tokens, self.bytes
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if enabled and log_interval is None and sys.stderr.isatty():
            from tqdm import tqdm  # imported only to be shown (0.05 s)

            self.bar = tqdm(
                total=total_bytes, initial=done.text_bytes, unit="B", unit_scale=True,
                desc="tokenize", file=sys.stderr, mininterval=0.5,
            )  # fmt: skip

    def update(self, documents: int, tokens: int, n_bytes: int) -> None:
        if not self.enabled:
            return
        before = self.documents
        self.documents += documents
        self.tokens += tokens
        self.bytes += n_bytes
        if self.bar is not None:
            self.bar.set_postfix(docs=self.documents, tokens=self.tokens, refresh=False)
            self.bar.update(n_bytes)
        elif self.log_interval is not None:
            if self.documents // self.log_interval > before // self.log_interval:
                self._line()
        elif time.monotonic() - self.last_line >= _LINE_SECONDS:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        elapsed = self.last_line - self.started
        per_second = 1 / elapsed if elapsed > 0 else 0.0
        mb_per_s = (self.bytes - self.first_bytes) / 1e6 * per_second
        tokens_per_s = (self.tokens - self.first_tokens) * per_second
        _log(
            f"tokenize: {self.documents:,} documents, {self.bytes / 1e6:,.1f} MB read, "
            f"{mb_per_s:,.2f} MB/s, {tokens_per_s:,.0f} tokens/s, {elapsed:,.1f} s elapsed"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- helpers


def _content_fingerprint(config: TokenizeConfig, tokenizer: Tokenizer) -> str:
    """Hash of the settings the shards' bytes depend on (not workers, paths or progress)."""
    ignored = ("workers", "partitions", "executor", "progress", "log_interval", "output_prefix",
               "inputs", "tokenizer", "batch_mb", "task", "tasks")  # fmt: skip
    settings = {k: v for k, v in asdict(config).items() if k not in ignored}
    # Counted only where it changes the bytes: without sentence splitting it changes nothing,
    # and shards written before the setting existed keep their fingerprints.
    if not (config.split_sentences and config.keep_newlines):
        del settings["keep_newlines"]
    return _digest([settings, tokenizer.spec, _tokenizer_hashes(tokenizer.spec)])


def _run_fingerprint(content: str, inputs: list[InputFile]) -> str:
    return _digest([content, [f.as_dict() for f in inputs]])


def _in_background(compute: Callable[[], Any]) -> Future:
    """``compute()`` in a daemon thread: neither an error nor an interrupt waits for it."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(compute())
        except BaseException as error:  # handed to whoever asks for the result
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


def _tokenizer_hashes(spec: dict[str, Any]) -> dict[str, str]:
    files = [spec[k] for k in ("path", "merges") if k in spec]
    return {f: sha256_of(f) for f in files}


def _checksum(path: Path) -> list[int] | None:
    """[size, CRC-32] of a file's bytes (None if it is missing)."""
    crc = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                crc = zlib.crc32(block, crc)
    except FileNotFoundError:
        return None
    return [path.stat().st_size, crc]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def _remove_temp_files(directory: Path, jobs: list[PartitionJob]) -> None:
    """Leftovers of a killed run of `jobs`: a partition without its marker is rewritten."""
    for path in directory.iterdir():
        if ".tmp" in path.name and any(job.owns(path.name) for job in jobs):
            path.unlink()


def _print_summary(manifests: list[dict[str, Any]], seconds: float) -> None:
    rows = [("shard", "documents", "tokens", "skipped", "MB", "MB/s", "tokens/s")]
    for m in manifests:
        mb = m["text_bytes"] / 1e6
        skipped = ", ".join(f"{r}={n}" for r, n in m["skipped"].items()) or "0"
        rows.append((
            m["prefix"], f"{m['documents']:,}", f"{m['tokens']:,}", skipped, f"{mb:.1f}",
            f"{mb / seconds:.2f}", f"{m['tokens'] / seconds:,.0f}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _log("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def tokenize(config: TokenizeConfig) -> list[dict[str, Any]]:
    """Write the shards a config describes (a no-op when they are up to date)."""
    return config.build().run()
