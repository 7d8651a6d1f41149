"""Bad records stop the job (naming file, line, reason) or are skipped and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep.readers import BadInputError
from data_prep.shards import ShardError, read_doc_table, read_manifest
from data_prep.writer import TokenizeConfig, tokenize
from tests.data_prep.conftest import make_records, write_jsonl

# (line bytes, reason it is skipped under); None marks a good record.
LINES = [
    (b'{"text": "good one", "id": "g1"}\n', None),
    (b'{"text": "broken\n', "invalid_json"),
    (b'{"body": "no text key"}\n', "missing_key"),
    (b'{"text": "bad \xff byte"}\n', "invalid_utf8"),
    (b'{"text": ""}\n', "empty"),
    (b'{"text": "nul\\u0000char"}\n', "control_chars"),
    (b'{"text": "bell\\u0007char"}\n', "control_chars"),
    (b'{"text": "good two", "id": "g2"}\n', None),
]


def config(inputs: list[Path], prefix: Path, spec: str, **options) -> TokenizeConfig:
    return TokenizeConfig([str(p) for p in inputs], str(prefix), spec, progress=False, **options)


@pytest.fixture
def bad_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(line for line, _ in LINES))
    return path


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_stop_names_file_line_and_reason_and_writes_nothing(
    tmp_path: Path, bad_jsonl: Path, bpe_spec: str, executor: str
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", make_records(50))
    with pytest.raises(BadInputError, match=rf"{bad_jsonl}:2: invalid_json: "):
        tokenize(config([good, bad_jsonl], tmp_path / "s", bpe_spec, workers=2,
                        partitions=2, executor=executor))  # fmt: skip
    for suffix in (".bin", ".idx", ".docs.parquet", ".manifest.json"):
        assert not (tmp_path / f"s{suffix}").exists()
    with pytest.raises(ShardError, match="missing"):
        read_manifest(tmp_path / "s")


def test_skip_counts_every_reason_and_conserves_documents(
    tmp_path: Path, bad_jsonl: Path, bpe_spec: str
) -> None:
    (manifest,) = tokenize(config([bad_jsonl], tmp_path / "s", bpe_spec, on_error="skip"))
    assert manifest["skipped"] == {
        "invalid_json": 1, "missing_key": 1, "invalid_utf8": 1, "empty": 1, "control_chars": 2,
    }  # fmt: skip
    assert manifest["documents"] == 2 == len(IndexedDataset(str(tmp_path / "s")))
    assert [r["id"] for r in read_doc_table(tmp_path / "s").to_pylist()] == ["g1", "g2"]
    assert manifest["documents_read"] == len(LINES)


def test_conservation_over_many_files_and_workers(tmp_path: Path, bpe_spec: str) -> None:
    """Documents read (counted here, from the files) == written + skipped, per reason."""
    inputs, expected_skips = [], 0
    for i in range(4):
        lines = [json.dumps(r).encode() + b"\n" for r in make_records(60, seed=i)]
        for j in range(i, 60, 7):  # corrupt a different set of lines in each file
            lines[j] = LINES[1 + j % 6][0]
            expected_skips += 1
        path = tmp_path / f"{i}.jsonl"
        path.write_bytes(b"".join(lines))
        inputs.append(path)
    gz = tmp_path / "z.jsonl.gz"
    gz.write_bytes(gzip.compress(inputs[0].read_bytes()))
    inputs.append(gz)
    expected_skips += sum(1 for j in range(0, 60, 7))
    documents_in_files = 5 * 60
    (manifest,) = tokenize(
        config(inputs, tmp_path / "s", bpe_spec, on_error="skip", workers=2, partitions=6)
    )
    skipped = sum(manifest["skipped"].values())
    assert skipped == expected_skips
    assert manifest["documents"] + skipped == documents_in_files == manifest["documents_read"]
    assert len(IndexedDataset(str(tmp_path / "s"))) == manifest["documents"]


def test_truncated_gzip(tmp_path: Path, bpe_spec: str) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", make_records(300)).read_bytes()
    compressed = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    with pytest.raises(BadInputError, match=rf"{path}:\d+: truncated: "):
        tokenize(config([path], tmp_path / "s", bpe_spec))
    (manifest,) = tokenize(config([path], tmp_path / "s", bpe_spec, on_error="skip"))
    assert manifest["skipped"] == {"truncated": 1}
    assert 0 < manifest["documents"] < 300


def test_a_100_mb_document(tmp_path: Path, bpe_spec: str) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:
        handle.write(b'{"text": "small one"}\n{"text": "')
        chunk = b"word " * (1 << 20)  # 5 MiB
        for _ in range(20):
            handle.write(chunk)
        handle.write(b'"}\n{"text": "small two"}\n')
    assert path.stat().st_size > 100 * 1e6
    with pytest.raises(BadInputError, match=rf"{path}:2: too_large: line of \d+ bytes"):
        tokenize(config([path], tmp_path / "s", bpe_spec))
    (manifest,) = tokenize(config([path], tmp_path / "s", bpe_spec, on_error="skip"))
    assert manifest["skipped"] == {"too_large": 1} and manifest["documents"] == 2
