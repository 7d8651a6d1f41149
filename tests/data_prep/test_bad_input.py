"""Bad records stop the job (naming file, line, reason) or are skipped and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep.readers import BadInputError, EmptyInputError
from data_prep.shards import ShardError, read_doc_table, read_manifest
from data_prep.writer import TokenizeConfig, tokenize
from tests.data_prep.conftest import make_records, write_jsonl

# (line bytes, reason it is skipped under); None marks a good record.
LINES = [
    (b'{"text": "good one", "id": "g1"}\n', None),
    (b'{"text": "broken\n', "invalid_json"),
    (b'{"body": "no text key"}\n', "missing_key"),
    (b'{"text": {"not": "a string"}}\n', "wrong_type"),
    (b'{"text": "bad \xff byte"}\n', "invalid_utf8"),
    (b'{"text": ""}\n', "empty"),
    (b'{"text": "nul\\u0000char"}\n', "nul_char"),
    (b'{"text": "bell\\u0007char", "id": "bell"}\n', None),  # kept, as Megatron-LM keeps it
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
    assert manifest["skipped"] == {"invalid_json": 1, "missing_key": 1, "wrong_type": 1,
                                   "invalid_utf8": 1, "nul_char": 1, "empty": 1}  # fmt: skip
    assert manifest["documents"] == 3 == len(IndexedDataset(str(tmp_path / "s")))
    assert [r["id"] for r in read_doc_table(tmp_path / "s").to_pylist()] == ["g1", "bell", "g2"]
    assert manifest["documents_read"] == len(LINES)
    assert manifest["control_chars"] == {"policy": "keep", "documents": 1}


POLICIES = [("keep", 3, {}), ("strip", 3, {}), ("error", 1, {"control_chars": 2})]


@pytest.mark.parametrize(("policy", "written", "skipped"), POLICIES)
def test_control_characters_are_kept_stripped_or_refused_and_counted(
    tmp_path: Path, bpe_spec: str, policy: str, written: int, skipped: dict
) -> None:
    texts = ["page one\fpage two \x07", "plain", "ansi \x1b[1mbold"]
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": text} for text in texts])
    (manifest,) = tokenize(config([path], tmp_path / policy, bpe_spec, on_error="skip",
                                  control_chars=policy))  # fmt: skip
    assert manifest["documents"] == written and manifest["skipped"] == skipped
    held = 0 if policy == "error" else 2  # written documents that held control characters
    assert manifest["control_chars"] == {"policy": policy, "documents": held}
    assert manifest["documents"] + sum(skipped.values()) == manifest["documents_read"] == 3
    if policy == "strip":  # the same tokens as the text without them
        stripped = ["page onepage two ", "plain", "ansi [1mbold"]
        clean = write_jsonl(tmp_path / "clean.jsonl", [{"text": text} for text in stripped])
        tokenize(config([clean], tmp_path / "clean", bpe_spec))
        for name in ("strip.bin", "strip.idx"):
            assert (tmp_path / name).read_bytes() == (tmp_path / f"clean{name[5:]}").read_bytes()


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_the_error_names_the_first_bad_line_whatever_the_workers(
    tmp_path: Path, bpe_spec: str, executor: str
) -> None:
    lines = [json.dumps({"text": f"document {i:05d} " + "word " * 40}) + "\n" for i in range(400)]
    lines[189] = '{"text": "late in the first partition\n'  # line 190
    lines[204] = '{"text": "early in the second\n'  # line 205: its partition fails first
    path = tmp_path / "two.jsonl"
    path.write_text("".join(lines))
    for _ in range(2):  # the same first defect however the partitions race
        with pytest.raises(BadInputError, match=rf"{path}:190: invalid_json: "):
            tokenize(config([path], tmp_path / "s", bpe_spec, workers=2, partitions=2,
                            executor=executor))  # fmt: skip
    (manifest,) = tokenize(config([path], tmp_path / "s", bpe_spec, workers=2, partitions=2,
                                  executor=executor, on_error="skip"))  # fmt: skip
    assert manifest["skipped"] == {"invalid_json": 2} and manifest["documents"] == 398


def test_a_stop_says_a_rerun_resumes_from_the_finished_partitions(
    tmp_path: Path, bpe_spec: str, capsys: pytest.CaptureFixture
) -> None:
    from data_prep.cli import main

    good = write_jsonl(tmp_path / "a.jsonl", make_records(30))
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": 7}\n')
    prefix = tmp_path / "s"
    argv = ["tokenize", "--input", str(good), str(bad), "--output-prefix", str(prefix),
            "--tokenizer", bpe_spec, "--partitions", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: wrong_type: field 'text' is an int, not a string" in err
    assert f"1 partition(s) before it are kept in {prefix}.parts/: a rerun resumes" in err
    assert f"`rm -r {prefix}.parts` starts over" in err
    kept = {path.name for path in Path(f"{prefix}.parts").iterdir()}
    assert "part-00000.done.json" in kept
    assert not [name for name in kept if name.startswith("merged")]  # the shard begun from it


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


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_input(tmp_path: Path, bpe_spec: str, suffix: str) -> None:
    # zstd decompresses a block (128 KiB) at a time: enough of them to cut one short
    data = write_jsonl(tmp_path / "d.jsonl", make_records(3000)).read_bytes()
    compress = gzip.compress if suffix == ".gz" else zstandard.ZstdCompressor().compress
    compressed = compress(data)
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    with pytest.raises(BadInputError, match=rf"{path}:\d+: truncated: "):
        tokenize(config([path], tmp_path / "s", bpe_spec))
    (manifest,) = tokenize(config([path], tmp_path / "s", bpe_spec, on_error="skip"))
    assert manifest["skipped"] == {"truncated": 1}
    assert 0 < manifest["documents"] < 3000


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


def test_inputs_without_a_document_are_refused_naming_them(tmp_path: Path, bpe_spec: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    with pytest.raises(EmptyInputError, match=rf"^no documents in {empty}$"):
        tokenize(config([empty], tmp_path / "s", bpe_spec))
    assert not list(tmp_path.glob("s.*"))  # no shard, and no partitions to resume from
    good = write_jsonl(tmp_path / "good.jsonl", make_records(3))
    (manifest,) = tokenize(config([empty, good], tmp_path / "s", bpe_spec))  # one is fine
    assert manifest["documents"] == 3


def test_inputs_whose_every_record_is_skipped_are_refused_with_the_counts(
    tmp_path: Path, bpe_spec: str
) -> None:
    bad = tmp_path / "all_bad.jsonl"
    bad.write_bytes(LINES[1][0] + LINES[2][0] + LINES[2][0])
    with pytest.raises(EmptyInputError, match=r"every record was skipped "
                       r"\(invalid_json=1, missing_key=2\)"):  # fmt: skip
        tokenize(config([bad], tmp_path / "s", bpe_spec, on_error="skip"))
