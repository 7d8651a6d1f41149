from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_prep import readers
from data_prep.readers import BadRecord, Document, ReaderConfig, expand_inputs, read_unit
from tests.data_prep.conftest import make_records, write_jsonl


def read_all(paths: list[str], config: ReaderConfig | None = None) -> list:
    config = config or ReaderConfig()
    return [r for unit in expand_inputs(paths) for r in read_unit(unit, config)]


def test_jsonl_gz_zst_and_parquet_read_the_same_documents(tmp_path: Path) -> None:
    records = make_records(50)
    plain = write_jsonl(tmp_path / "a.jsonl", records)
    data = plain.read_bytes()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    expected = [(r["text"], r["id"], r["label"]) for r in records]
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"):
        docs = read_all([str(tmp_path / name)])
        assert [(d.texts[0], d.doc_id, d.label) for d in docs] == expected, name
        assert [d.line for d in docs] == list(range(1, 51))


def test_text_directory_is_a_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "legal").mkdir()
    (tmp_path / "legal" / "b.txt").write_text("Second document.")
    (tmp_path / "a.txt").write_text("First document.")
    docs = read_all([str(tmp_path)])
    assert [(d.texts[0], d.doc_id, d.label) for d in docs] == [
        ("First document.", "a.txt", None),
        ("Second document.", "legal/b.txt", "legal"),
    ]


def test_several_json_keys_and_missing_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "k.jsonl", [{"title": "T", "body": "B"}])
    (doc,) = read_all([str(path)], ReaderConfig(json_keys=("title", "body")))
    assert doc.texts == ("T", "B") and doc.doc_id == "k.jsonl:1" and doc.label is None


BAD_LINES = [
    (b'{"text": "fine"}\n', None),
    (b'{"text": \n', readers.INVALID_JSON),
    (b'{"other": "x"}\n', readers.MISSING_KEY),
    (b'{"text": 3}\n', readers.WRONG_TYPE),
    (b'{"text": "caf\xe9"}\n', readers.INVALID_UTF8),
    (b'{"text": "lone \\ud800"}\n', readers.INVALID_UTF8),
    (b'{"text": "   "}\n', readers.EMPTY),
    (b'{"text": "nul \\u0000 here"}\n', readers.NUL_CHAR),
    (b'{"text": "bell \\u0007 and form feed \\f are text"}\n', None),
    (b"[1, 2]\n", readers.INVALID_JSON),
]


def test_each_bad_record_names_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(line for line, _ in BAD_LINES))
    records = read_all([str(path)])
    assert len(records) == len(BAD_LINES)
    for line_no, (record, (_, reason)) in enumerate(zip(records, BAD_LINES, strict=True), 1):
        assert record.line == line_no
        if reason is None:
            assert isinstance(record, Document)
        else:
            assert isinstance(record, BadRecord) and record.reason == reason
            assert record.message().startswith(f"{path}:{line_no}: {reason}:")


def test_a_wrong_type_is_named_with_the_type_found(tmp_path: Path) -> None:
    records = [{"text": ["a", "list"]}, {"text": None}, {"text": 3}, {"body": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    a_list, null, an_int, missing = read_all([str(path)])
    assert a_list.message() == f"{path}:1: wrong_type: field 'text' is a list, not a string"
    assert null.message() == f"{path}:2: wrong_type: field 'text' is null, not a string"
    assert an_int.detail == "field 'text' is an int, not a string"
    assert missing.message() == f"{path}:4: missing_key: field 'text' is missing"


def test_a_null_parquet_value_is_a_wrong_type_and_an_absent_column_a_missing_key(
    tmp_path: Path,
) -> None:
    pq.write_table(pa.table({"text": ["ok", None]}), tmp_path / "t.parquet")
    ok, null = read_all([str(tmp_path / "t.parquet")])
    assert ok.texts == ("ok",) and null.detail == "field 'text' is null, not a string"
    (missing, _) = read_all([str(tmp_path / "t.parquet")], ReaderConfig(json_keys=("body",)))
    assert missing.reason == readers.MISSING_KEY


# Values a fast JSON parser reads otherwise than json: integers beyond 64 bits, floats
# beyond range, NaN; and, nested or not, what both read alike.
ODD_VALUES = ["100000000000000000000", "-9223372036854775809", "18446744073709551615", "1e400",
              "NaN", "-Infinity", "1.5", "1E5", "-0.0", "true", "null", '"plain"',
              "[1, 100000000000000000000]", '{"a": 1e400}']  # fmt: skip


@pytest.mark.parametrize("value", ODD_VALUES)
def test_every_field_is_read_as_json_reads_it(tmp_path: Path, value: str) -> None:
    path = tmp_path / "v.jsonl"
    lines = [f'{{"text": "hello", "id": {value}, "label": {value}, "extra": {value}}}',
             f'{{"text": {value}}}']  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    document, text = read_all([str(path)])
    expected = json.loads(lines[0])["id"]
    assert document.doc_id == ("v.jsonl:1" if expected is None else str(expected))
    assert document.label == (None if expected is None else str(expected))
    found = type(json.loads(lines[1])["text"]).__name__
    if found == "str":
        assert text.texts == ("plain",)
    else:
        assert text.reason == readers.WRONG_TYPE
        assert f" {'null' if found == 'NoneType' else found}, not a string" in text.detail


@pytest.mark.parametrize(
    ("policy", "text", "reason"),
    [("keep", "ring\x07 \x08back\x0cpage\x1b[0m\x7f", None),
     ("strip", "ring backpage[0m", None),
     ("error", None, readers.CONTROL_CHARS)],
)  # fmt: skip
def test_control_characters_follow_the_policy(tmp_path: Path, policy, text, reason) -> None:
    original = "ring\x07 \x08back\x0cpage\x1b[0m\x7f"
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": original}, {"text": "tab\tand\nlines\r"},
                                              {"text": "\x07\x08"}])  # fmt: skip
    controls, plain, only_controls = read_all([str(path)], ReaderConfig(control_chars=policy))
    if reason is None:
        assert controls.texts == (text,) and controls.control_chars
    else:
        assert controls.reason == reason and "U+0007" in controls.detail
    assert plain.texts == ("tab\tand\nlines\r",) and not plain.control_chars
    # stripped to nothing is empty; kept, two control characters are a document
    expected = {"keep": Document, "strip": BadRecord, "error": BadRecord}[policy]
    assert isinstance(only_controls, expected)


def _json_writings(text: str) -> list[str]:
    """The ways a JSON line can hold `text`: raw, escaped (lower- and upper-case hex)."""
    escaped = json.dumps({"text": text})
    upper = re.sub(r"(?<=\\u)[0-9a-f]{4}", lambda match: match.group().upper(), escaped)
    return [json.dumps({"text": text}, ensure_ascii=False), escaped, upper]


@pytest.mark.parametrize("policy", readers.CONTROL_CHAR_POLICIES)
def test_the_line_prescan_misses_no_control_character(policy: str) -> None:
    # Every character the checks look for (and neighbours), alone and in a pair of
    # surrogates, each way JSON can write it: the record a line gives when its bytes are
    # pre-scanned is the one a scan of its decoded text gives.
    chars = [chr(c) for c in (*range(0x80), 0xE9, 0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF,
                              0xE000, 0xFFFF)] + ["\ud83d\ude00", "\\b", "\\f"]  # fmt: skip
    config = ReaderConfig(control_chars=policy)
    for char in chars:
        for line in (w for text in (char, f"a{char}b", f"\\{char}") for w in _json_writings(text)):
            try:  # a raw lone surrogate is not UTF-8: such a line is never scanned
                raw = line.encode("utf-8")
            except UnicodeEncodeError:
                continue
            scanned = readers._parse_json_line(raw, config, "f.jsonl", 1)
            fields = json.loads(line)
            assert scanned == readers.make_record(fields, config, "f.jsonl", 1, len(raw)), raw


def test_oversized_line_is_measured_not_held(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    big = json.dumps({"text": "x" * 5000})
    path.write_text(big + "\n" + json.dumps({"text": "after"}) + "\n")
    first, second = read_all([str(path)], ReaderConfig(max_doc_bytes=1000))
    assert first.reason == readers.TOO_LARGE and str(len(big) + 1) in first.detail
    assert second.texts == ("after",) and second.line == 2


COMPRESSORS = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress}


@pytest.mark.parametrize("suffix", COMPRESSORS)
@pytest.mark.parametrize("kept", [0.002, 0.5, 0.999])  # cut in the header, the middle, the end
def test_a_truncated_compressed_file_stops_with_a_record(
    tmp_path: Path, suffix: str, kept: float
) -> None:
    data = write_jsonl(tmp_path / "t.jsonl", make_records(400)).read_bytes()
    compressed = COMPRESSORS[suffix](data)
    path = tmp_path / f"t.jsonl{suffix}"
    path.write_bytes(compressed[: int(len(compressed) * kept)])
    records = read_all([str(path)])
    assert all(isinstance(r, Document) for r in records[:-1])
    assert records[-1].reason == readers.TRUNCATED and records[-1].line == len(records)
    assert records[-1].message().startswith(f"{path}:{len(records)}: truncated: ")


def test_a_zstd_file_of_several_frames_reads_whole(tmp_path: Path) -> None:
    records = make_records(300)
    frames = [write_jsonl(tmp_path / f"{i}.jsonl", records[i::2]).read_bytes() for i in (0, 1)]
    path = tmp_path / "two.jsonl.zst"
    path.write_bytes(b"".join(COMPRESSORS[".zst"](frame) for frame in frames))
    texts = [r.texts[0] for r in read_all([str(path)])]
    assert texts == [r["text"] for r in records[0::2] + records[1::2]]


def test_unknown_input_type_and_missing_input(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown input type"):
        expand_inputs([str(tmp_path / "x.csv")])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing*.jsonl")])
