from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from data_prep import plan as plan_module
from data_prep.plan import make_plan, sha256_of
from data_prep.readers import ReaderConfig, expand_inputs, read_unit
from tests.data_prep.conftest import make_records, write_jsonl


@pytest.mark.parametrize(("count_block", "map_bytes"), [(7, 0), (8 << 20, 1 << 20)])
@pytest.mark.parametrize("partitions", [1, 2, 3, 7, 40])
def test_partitions_cover_every_line_once_in_order(
    tmp_path: Path,
    partitions: int,
    count_block: int,
    map_bytes: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the cuts (newlines are counted a block at a time, in files mapped or read),
    the partitions read every line once, in order, with its number; also from an empty
    file and from a last line without its newline."""
    monkeypatch.setattr(plan_module, "_COUNT_BLOCK", count_block)
    monkeypatch.setattr(plan_module, "_MAP_BYTES", map_bytes)
    records = make_records(100)
    write_jsonl(tmp_path / "a.jsonl", records[:70])
    (tmp_path / "empty.jsonl").write_bytes(b"")
    write_jsonl(tmp_path / "b.jsonl", records[70:])
    unterminated = (tmp_path / "b.jsonl").read_bytes().rstrip(b"\n")
    (tmp_path / "b.jsonl").write_bytes(unterminated)
    paths = [str(tmp_path / name) for name in ("a.jsonl", "empty.jsonl", "b.jsonl")]
    plan = make_plan(expand_inputs(paths), partitions)
    assert 1 <= len(plan.partitions) <= partitions
    plan = plan.numbered(range(len(plan.partitions)))
    read = [
        (Path(r.source).name, r.line, r.texts[0])
        for part in plan.partitions
        for unit in part
        for r in read_unit(unit, ReaderConfig())
    ]
    expected = [("a.jsonl", i + 1, r["text"]) for i, r in enumerate(records[:70])]
    expected += [("b.jsonl", i + 1, r["text"]) for i, r in enumerate(records[70:])]
    assert read == expected
    assert plan.sizes == {p: Path(p).stat().st_size for p in paths}


@pytest.mark.parametrize("map_bytes", [0, 1 << 20])
def test_inputs_and_ranges_hash_their_bytes(
    tmp_path: Path, map_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_module, "_MAP_BYTES", map_bytes)  # mapped, or read at once
    path = write_jsonl(tmp_path / "a.jsonl", make_records(20))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    data = path.read_bytes()
    assert sha256_of(str(path)) == hashlib.sha256(data).hexdigest()
    assert sha256_of(str(path), 10, 300) == hashlib.sha256(data[10:300]).hexdigest()
    assert sha256_of(str(path), 300) == hashlib.sha256(data[300:]).hexdigest()
    assert sha256_of(str(tmp_path / "empty.jsonl")) == hashlib.sha256(b"").hexdigest()
    plan = make_plan(expand_inputs([str(path), str(tmp_path / "empty.jsonl")]), 3)
    assert [f.as_dict() for f in plan.input_files] == [
        {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        {"path": str(tmp_path / "empty.jsonl"), "size": 0,
         "sha256": hashlib.sha256(b"").hexdigest()},
    ]  # fmt: skip


def test_a_task_counts_lines_only_in_the_files_its_partitions_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [write_jsonl(tmp_path / f"{i}.jsonl", make_records(60, seed=i)) for i in range(3)]
    plan = make_plan(expand_inputs([str(p) for p in paths]), 9)
    everything = plan.numbered(range(len(plan.partitions)))
    last = str(paths[2].resolve())
    mine = [i for i, units in enumerate(plan.partitions) if units[0].path == last][1:]
    assert mine and all(u.path == last for i in mine for u in plan.partitions[i])
    counted = []
    count = plan_module._lines_before

    def spy(path: str, offsets: list[int]) -> list[int]:
        counted.append(path)
        return count(path, offsets)

    monkeypatch.setattr(plan_module, "_lines_before", spy)
    numbered = plan.numbered(mine)
    assert counted == [last]
    for i, units in enumerate(numbered.partitions):
        if i in mine:
            assert units == everything.partitions[i]
        else:
            assert units == plan.partitions[i]  # those inside a file still uncounted
    uncounted = next(u for units in numbered.partitions for u in units if u.first_line is None)
    with pytest.raises(ValueError, match="never counted"):
        next(read_unit(uncounted, ReaderConfig()))
