from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.shards import ShardError, read_manifest
from data_prep.writer import TokenizeConfig, tokenize


@pytest.fixture
def shard(tmp_path: Path, jsonl: Path, bpe_spec: str) -> Path:
    tokenize(TokenizeConfig([str(jsonl)], str(tmp_path / "s"), bpe_spec, progress=False))
    return tmp_path / "s"


def rewrite(prefix: Path, **changes) -> None:
    path = Path(f"{prefix}.manifest.json")
    manifest = json.loads(path.read_text()) | changes
    path.write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))


def test_missing_shard(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no shard at .*manifest.json is missing"):
        read_manifest(tmp_path / "nothing")


def test_wrong_format(shard: Path) -> None:
    rewrite(shard, format="something/else")
    with pytest.raises(ShardError, match="format is 'something/else', expected"):
        read_manifest(shard)


def test_missing_key(shard: Path) -> None:
    rewrite(shard, eod_id=None)
    with pytest.raises(ShardError, match=r"missing keys \['eod_id'\]"):
        read_manifest(shard)


def test_missing_data_file(shard: Path) -> None:
    Path(f"{shard}.idx").unlink()
    with pytest.raises(ShardError, match=r"data file .*s\.idx is missing"):
        read_manifest(shard)


def test_not_json(shard: Path) -> None:
    Path(f"{shard}.manifest.json").write_text("{")
    with pytest.raises(ShardError, match="not valid JSON"):
        read_manifest(shard)
