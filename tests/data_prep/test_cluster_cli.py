from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from data_prep import writer
from data_prep.cli import main
from data_prep.cluster_cli import add_commands
from data_prep.writer import TokenizeConfig, tokenize
from tests.data_prep.conftest import make_records, write_jsonl
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


def test_k_below_one_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "--embeddings", "E", "--output", "O", "--k", "0"])
    assert exit_.value.code == 2
    assert "argument --k: must be an integer >= 1, not 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--by-label", "--k", "3"], "--by-label makes one cluster per label: give it without --k"),
     (["--k", "2", "--split", "a,b,c"], "split 'a,b,c': expected train,held-out,test shares"),
     (["--k", "2", "--split", "0,0,0"], "split '0,0,0': expected train,held-out,test shares"),
     (["--k", "2", "--split", "98,-2,0"], "split '98,-2,0': expected")],
)  # fmt: skip
def test_contradictory_or_invalid_options_are_refused(
    tmp_path: Path, capsys, options: list[str], message: str
) -> None:
    argv = ["cluster", "--embeddings", str(tmp_path / "e"), "--output", str(tmp_path / "c")]
    assert main([*argv, *options]) == 1
    assert message in capsys.readouterr().err


def test_by_label_refuses_documents_without_labels(tmp_path: Path, bpe_spec: str, capsys) -> None:
    records = [{"text": record["text"]} for record in make_records(20)]
    corpus = write_jsonl(tmp_path / "unlabelled.jsonl", records)
    tokenize(TokenizeConfig([str(corpus)], str(tmp_path / "s"), bpe_spec, progress=False))
    emb = str(tmp_path / "emb")
    argv = ["embed", "--shards", str(tmp_path / "s"), "--output", emb, "--tfidf-dim", "4"]
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "clusters")
    assert main(["cluster", "--embeddings", emb, "--output", out, "--by-label"]) == 1
    expected = "no document of the shards has a label (tokenize read label key 'label')"
    assert f"msplit data cluster: error: --by-label: {expected}" in capsys.readouterr().err


def test_embedding_a_shard_without_documents_is_a_clean_error(
    tmp_path: Path, bpe_spec: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Such a shard as versions that did not refuse empty inputs wrote it.
    monkeypatch.setattr(writer, "check_some_documents", lambda *args: None)
    (tmp_path / "empty.jsonl").write_text("")
    tokenize(TokenizeConfig([str(tmp_path / "empty.jsonl")], str(tmp_path / "s"), bpe_spec,
                            progress=False))  # fmt: skip
    capsys.readouterr()
    argv = ["embed", "--shards", str(tmp_path / "s"), "--output", str(tmp_path / "emb")]
    assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == f"msplit data embed: error: shard {tmp_path / 's'} holds no documents\n"


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["cluster", "--help"])
    assert exit_info.value.code == 0
    assert "--balanced" in capsys.readouterr().out
    assert main([]) == 2
