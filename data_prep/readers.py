"""Corpus readers: JSONL (plain, .gz, .zst), Parquet and plain-text directories.

Readers stream: memory stays bounded by the largest accepted document, whatever the file
size (an over-long JSONL line is measured and skipped in chunks, never held). Every record
comes out as a :class:`Document` or a :class:`BadRecord` naming file, line and reason, so the
caller decides whether to stop or to skip and count; nothing is dropped silently.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

# Reasons a record is rejected; the manifest counts skips under these names.
INVALID_JSON = "invalid_json"
MISSING_KEY = "missing_key"
WRONG_TYPE = "wrong_type"
INVALID_UTF8 = "invalid_utf8"
NUL_CHAR = "nul_char"
EMPTY = "empty"
CONTROL_CHARS = "control_chars"
TOO_LARGE = "too_large"
TRUNCATED = "truncated"
REASONS = (INVALID_JSON, MISSING_KEY, WRONG_TYPE, INVALID_UTF8, NUL_CHAR, EMPTY, CONTROL_CHARS,
           TOO_LARGE, TRUNCATED)  # fmt: skip
# What to do with a bad record: stop at the first, naming it, or skip it and count it.
ON_ERROR = ("stop", "skip")
# What to do with a text's control characters other than tab, newline and carriage return
# (form feed, BEL, backspace, ESC, DEL, ...): keep them (the tokenizer encodes them, as
# Megatron-LM's preprocess_data.py does), strip them, or refuse the document. NUL and lone
# surrogates are corruption whatever the policy.
CONTROL_CHAR_POLICIES = ("keep", "strip", "error")

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
PARQUET_SUFFIXES = (".parquet", ".pq")
# NUL and lone UTF-16 surrogates (which JSON "\\ud800" escapes produce and UTF-8 cannot
# encode): corruption. The other C0 controls but tab/newline/carriage return, and DEL.
_CORRUPT_CHAR = re.compile("[\x00\ud800-\udfff]")
_CONTROL_CHAR = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Either kind: one scan of a clean text (nearly every text) finds neither; a hit is then
# told apart by the two patterns above.
_SUSPECT_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# In a JSON line a string can hold those only as escapes (\b, \f, \u0000-\u001f, \u007f,
# \ud800-\udfff), or DEL raw: a line with neither holds none (a hit, even a false one such as
# an escaped backslash before "b", sends its texts through the scan above). Bytes search
# faster than text, and a DEL alternative would cost this pattern its fast literal prefix.
_SUSPECT_ESCAPE = re.compile(rb"\\(?:[bf]|u(?:00[01]|007[fF]|[dD][89a-fA-F]))")
_CHUNK = 1 << 20
# Compressed bytes decompressed at once: text compresses up to ~100x, so this bounds the
# bytes held at a time to a few MB.
_ZSTD_READ = 1 << 16


@dataclass(frozen=True)
class ReaderConfig:
    """Which fields hold text, id and label, and the largest document accepted."""

    json_keys: tuple[str, ...] = ("text",)
    id_key: str = "id"
    label_key: str = "label"
    max_doc_bytes: int = 32 << 20
    control_chars: str = "keep"  # one of CONTROL_CHAR_POLICIES

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields a record is read for."""
        return (*self.json_keys, self.id_key, self.label_key)


@dataclass(frozen=True)
class Document:
    """One accepted record: a text per json key, where it came from, its id and label."""

    texts: tuple[str, ...]
    source: str
    line: int
    doc_id: str
    label: str | None
    n_bytes: int
    control_chars: bool = False  # held control characters (kept or stripped by the policy)


@dataclass(frozen=True)
class BadRecord:
    """One rejected record and why."""

    source: str
    line: int
    reason: str
    detail: str

    def message(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}: {self.detail}"


class BadInputError(ValueError):
    """Raised (with --on-error stop) for the first bad record; ``then`` says what to do."""

    def __init__(self, record: BadRecord, then: str = ""):
        super().__init__(record.message() + then)
        self.record, self.then = record, then

    def __reduce__(self) -> tuple[type, tuple[BadRecord, str]]:
        # Worker processes send it back pickled; rebuild it from its record.
        return type(self), (self.record, self.then)


class EmptyInputError(ValueError):
    """Inputs that yield no document: nothing worth writing."""


Record = Document | BadRecord


@dataclass(frozen=True)
class InputUnit:
    """A piece of work: a whole file, or a byte range [start, end) of a plain JSONL file."""

    path: str
    kind: str  # "jsonl", "parquet" or "text"
    start: int = 0
    end: int | None = None
    first_line: int | None = 1  # of the line at `start` (None: not counted yet, see plan.py)
    root: str | None = None  # text files: the directory the document ids are relative to


def input_kind(path: Path) -> str:
    """'jsonl', 'parquet' or 'text' from a file name (compression suffixes allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(
        f"{path}: unknown input type (expected .jsonl[.gz|.zst], .parquet, or a directory "
        "of text files)"
    )


def expand_inputs(inputs: Sequence[str]) -> list[InputUnit]:
    """Files, directories of text files and globs -> one unit per file, in a fixed order."""
    units: list[InputUnit] = []
    for item in inputs:
        path = Path(item)
        matches = (
            [path] if path.exists() else sorted(Path(p) for p in glob.glob(item, recursive=True))
        )
        if not matches:
            raise FileNotFoundError(f"input {item!r} matches no file")
        for match in matches:
            if match.is_dir():
                root = str(match.resolve())
                files = sorted(p for p in match.rglob("*") if p.is_file())
                units += [InputUnit(str(f.resolve()), "text", root=root) for f in files]
            else:
                units.append(InputUnit(str(match.resolve()), input_kind(match)))
    return units


def read_unit(unit: InputUnit, config: ReaderConfig) -> Iterator[Record]:
    """Every record of a unit, in order."""
    if unit.kind == "jsonl":
        return _read_jsonl(unit, config)
    if unit.kind == "parquet":
        return _read_parquet(unit, config)
    return _read_text_file(unit, config)


def open_binary(path: str) -> IO[bytes]:
    """A binary stream of a file's decompressed content."""
    codec = COMPRESSED_SUFFIXES.get(Path(path).suffix.lower())
    if codec == "gzip":
        return gzip.open(path, "rb")
    if codec == "bz2":
        return bz2.open(path, "rb")
    if codec == "zstd":
        return io.BufferedReader(_ZstdFrames(path), buffer_size=_CHUNK)
    # Lines run to megabytes: a small buffer reads one in many system calls (3x slower).
    return open(path, "rb", buffering=_CHUNK)  # noqa: SIM115 - the caller closes it


class _ZstdFrames(io.RawIOBase):
    """A zstd file's decompressed bytes, frame after frame. zstandard's stream reader ends
    quietly where a truncated file ends; this raises EOFError there, as gzip and bz2 do,
    and OSError for corrupt data."""

    def __init__(self, path: str):
        import zstandard

        self._file = open(path, "rb")  # noqa: SIM115 - closed with this stream
        self._decompressor = zstandard.ZstdDecompressor()
        self._error = zstandard.ZstdError
        self._frame: Any = None  # the frame being decompressed; None between frames
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            data = self._file.read(_ZSTD_READ)
            if not data:
                if self._frame is not None:
                    raise EOFError("zstd file ended inside a frame (truncated)")
                return 0
            self._out = memoryview(self._decompress(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None:
                self._frame = self._decompressor.decompressobj()
            try:
                out.append(self._frame.decompress(data))
            except self._error as error:
                raise OSError(f"corrupt zstd data: {error}") from None
            data = b""
            if self._frame.eof:  # the rest of the data starts the next frame
                data, self._frame = self._frame.unused_data, None
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()


def check_text(
    texts: Sequence[str], max_bytes: int, refuse_controls: bool = False, suspect: bool = True
) -> tuple[str, str] | None:
    """(reason, detail) if the texts of one record are unusable, else None; with
    ``refuse_controls`` (the texts hold control characters, policy "error") that too.
    ``suspect=False`` says a scan found no NUL, surrogate or control character in them."""
    for text in texts:
        if not text or text.isspace():
            return EMPTY, "document is empty or only whitespace"
        match = _CORRUPT_CHAR.search(text) if suspect else None
        if match:
            code = ord(match.group())
            if code == 0:
                return NUL_CHAR, "NUL character (U+0000) in text"
            return INVALID_UTF8, f"lone UTF-16 surrogate U+{code:04X} in text"
        if refuse_controls and (match := _CONTROL_CHAR.search(text)):
            return CONTROL_CHARS, (
                f"control character U+{ord(match.group()):04X} in text (--control-chars keep "
                "or strip accepts it)"
            )
    size = sum(len(t) for t in texts)  # characters: a cheap lower bound on bytes
    if size * 4 > max_bytes and sum(len(t.encode("utf-8")) for t in texts) > max_bytes:
        return TOO_LARGE, f"document over {max_bytes} bytes"
    return None


def make_record(
    fields: dict[str, Any],
    config: ReaderConfig,
    source: str,
    line: int,
    n_bytes: int,
    may_hold_controls: bool = True,
) -> Record:
    """Validate one parsed record (JSON object or Parquet row); ``may_hold_controls=False``
    says its texts are known to hold no NUL, surrogate or control character."""
    texts = []
    for key in config.json_keys:
        if key not in fields:
            return BadRecord(source, line, MISSING_KEY, f"field {key!r} is missing")
        value = fields[key]
        if not isinstance(value, str):
            found = _type_phrase(value)
            return BadRecord(source, line, WRONG_TYPE, f"field {key!r} is {found}, not a string")
        texts.append(value)
    suspect = may_hold_controls and any(_SUSPECT_CHAR.search(text) for text in texts)
    controls = suspect and any(_CONTROL_CHAR.search(text) for text in texts)
    if controls and config.control_chars == "strip":
        texts = [_CONTROL_CHAR.sub("", text) for text in texts]
    refuse = controls and config.control_chars == "error"
    problem = check_text(texts, config.max_doc_bytes, refuse, suspect)
    if problem:
        return BadRecord(source, line, *problem)
    doc_id = fields.get(config.id_key)
    label = fields.get(config.label_key)
    return Document(
        texts=tuple(texts),
        source=source,
        line=line,
        doc_id=f"{Path(source).name}:{line}" if doc_id is None else str(doc_id),
        label=None if label is None else str(label),
        n_bytes=n_bytes,
        control_chars=controls,
    )


def _type_phrase(value: Any) -> str:
    """'null', 'an int', 'a list', ...: what a field holds, for a message."""
    if value is None:
        return "null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def read_documents(
    units: Sequence[InputUnit], config: ReaderConfig, on_error: str, skipped: Counter[str]
) -> Iterator[Document]:
    """The accepted documents of `units`, in order. A bad record raises BadInputError
    (``on_error`` "stop") or is counted in `skipped` by reason ("skip")."""
    for unit in units:
        for record in read_unit(unit, config):
            if isinstance(record, BadRecord):
                if on_error == "stop":
                    raise BadInputError(record)
                skipped[record.reason] += 1
                continue
            yield record


def check_some_documents(inputs: Sequence[str], documents: int, skipped: Mapping[str, int]) -> None:
    """Refuse a run whose inputs gave no document: its output would hold nothing."""
    if documents:
        return
    named = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    why = ", ".join(f"{r}={n}" for r, n in sorted(skipped.items()))
    raise EmptyInputError(
        f"no documents in {named}" + (f": every record was skipped ({why})" if why else "")
    )


def _read_jsonl(unit: InputUnit, config: ReaderConfig) -> Iterator[Record]:
    source, line_no, limit = unit.path, unit.first_line, config.max_doc_bytes
    if line_no is None:
        raise ValueError(f"{source} from byte {unit.start}: its line number was never counted")
    position, end = unit.start, unit.end
    with open_binary(source) as stream:
        if unit.start:
            stream.seek(unit.start)
        while end is None or position < end:
            try:
                raw = stream.readline(limit + 1)
                if len(raw) > limit and not raw.endswith(b"\n"):
                    # Too long to hold: measure the rest of the line in bounded chunks.
                    n_bytes = len(raw) + _skip_to_newline(stream)
                    yield BadRecord(source, line_no, TOO_LARGE, f"line of {n_bytes} bytes")
                    position += n_bytes
                    line_no += 1
                    continue
            except (EOFError, OSError) as error:  # truncated/corrupt gzip, zstd, bz2
                yield BadRecord(source, line_no, TRUNCATED, f"compressed stream broken: {error}")
                return
            if not raw:
                return
            position += len(raw)
            if raw.strip():
                yield _parse_json_line(raw, config, source, line_no)
            line_no += 1


def _skip_to_newline(stream: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _parse_json_line(raw: bytes, config: ReaderConfig, source: str, line: int) -> Record:
    fields = _loads_exactly(raw, config.fields)
    if fields is None:  # json.loads, which also says what is wrong with a line
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return BadRecord(source, line, INVALID_UTF8, f"byte {error.start} of the line: {error}")
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            return BadRecord(source, line, INVALID_JSON, str(error))
        if not isinstance(fields, dict):
            kind = type(fields).__name__
            return BadRecord(source, line, INVALID_JSON, f"a {kind}, not an object")
    may_hold_controls = b"\x7f" in raw or _SUSPECT_ESCAPE.search(raw) is not None
    return make_record(fields, config, source, line, len(raw), may_hold_controls)


# Values orjson parses exactly as json does. It reads an integer beyond 64 bits as a float,
# and refuses what json accepts (NaN, lone surrogate escapes), invalid UTF-8 and bad JSON.
_EXACT_TYPES = (str, int, bool, type(None))


def _loads_exactly(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """A JSON object as json.loads would give it, where orjson (3x faster) certainly gives
    the same for every field read; None where json.loads must decide."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(record) is not dict or any(type(record.get(k)) not in _EXACT_TYPES for k in fields):
        return None
    return record


def _read_parquet(unit: InputUnit, config: ReaderConfig) -> Iterator[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(unit.path)
    wanted = (*config.json_keys, config.id_key, config.label_key)
    present = set(parquet.schema_arrow.names)
    columns = list(dict.fromkeys(k for k in wanted if k in present))
    row = 1
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            fields = {k: v[i] for k, v in data.items()}
            n_bytes = sum(
                len(fields[k]) for k in config.json_keys if isinstance(fields.get(k), str)
            )
            yield make_record(fields, config, unit.path, row, n_bytes)
            row += 1


def _read_text_file(unit: InputUnit, config: ReaderConfig) -> Iterator[Record]:
    path, root = Path(unit.path), Path(unit.root or Path(unit.path).parent)
    size = path.stat().st_size
    if size > config.max_doc_bytes:
        yield BadRecord(unit.path, 1, TOO_LARGE, f"file of {size} bytes")
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        yield BadRecord(unit.path, 1, INVALID_UTF8, f"byte {error.start}: {error}")
        return
    relative = path.relative_to(root)
    label = relative.parent.as_posix()
    fields = {key: text for key in config.json_keys} | {
        config.id_key: relative.as_posix(),
        config.label_key: None if label == "." else label,
    }
    yield make_record(fields, config, unit.path, 1, size)
