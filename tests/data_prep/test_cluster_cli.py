from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from data_prep.cli import main
from data_prep.cluster_cli import add_commands
from tests.data_prep.labelled_shards import write_labelled_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    counts = {"law": 30, "code": 30, "astronomy": 30}
    return write_labelled_shards(tmp_path_factory.mktemp("cli"), counts, n_shards=2)


def test_commands_register_on_a_host_parser() -> None:
    parser = argparse.ArgumentParser(prog="host")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cluster", "--embeddings", "E", "--output", "O", "--k", "3"])
    assert args.command == "cluster" and args.k == 3 and callable(args.run)
    assert parser.parse_args(["embed", "--shards", "a", "b", "--output", "o"]).shards == ["a", "b"]
    assert parser.parse_args(["cluster-report", "--clusters", "C"]).sample == 5000


def test_embed_cluster_report(shards: list[str], tmp_path: Path, capsys) -> None:
    emb, out = str(tmp_path / "emb"), str(tmp_path / "clusters")
    assert (
        main(
            [
                "embed",
                "--shards",
                *shards,
                "--output",
                emb,
                "--embedder",
                "tfidf",
                "--tfidf-dim",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "90 documents x 16 dims (tfidf" in capsys.readouterr().out
    assert (
        main(
            [
                "cluster",
                "--embeddings",
                emb,
                "--output",
                out,
                "--k",
                "3",
                "--split",
                "90,10,0",
                "--balanced",
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "purity 1.0000  NMI 1.0000  against 3 labels on 90 documents" in table
    manifest = json.loads((tmp_path / "clusters" / "clusters.json").read_text())
    assert manifest["kmeans"]["balanced"] and [c["documents"] for c in manifest["clusters"]] == [
        30,
        30,
        30,
    ]
    assert (
        main(["cluster-report", "--clusters", out, "--output", str(tmp_path / "r"), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["scores"]["nmi"] == 1.0
    assert (tmp_path / "r" / "report.png").stat().st_size > 10_000


def test_errors_are_reported_not_raised(shards: list[str], tmp_path: Path, capsys) -> None:
    emb = str(tmp_path / "emb")
    assert main(["cluster", "--embeddings", emb, "--output", str(tmp_path / "c"), "--k", "2"]) == 1
    assert "did not finish there" in capsys.readouterr().err
    main(["embed", "--shards", *shards, "--output", emb, "--embedder", "tfidf", "--no-progress"])
    assert (
        main(["cluster", "--embeddings", emb, "--output", str(tmp_path / "c"), "--k", "500"]) == 1
    )
    assert "k=500 is larger than the number of documents (90)" in capsys.readouterr().err
    assert main(["cluster", "--embeddings", emb, "--output", str(tmp_path / "c")]) == 1
    assert "give --k" in capsys.readouterr().err
    assert main(["embed", "--shards", str(tmp_path / "none"), "--output", emb]) == 1
    assert "no shard at" in capsys.readouterr().err


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", "--help"])
    assert exit_info.value.code == 0
    assert "--balanced" in capsys.readouterr().out
    assert main([]) == 2
