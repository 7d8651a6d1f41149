from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.cluster import ClusterConfig, read_clusters
from data_prep.cluster_report import ReportConfig, label_scores
from data_prep.doc_texts import ShardDocuments
from data_prep.kmeans import ClusterError, KMeansConfig
from data_prep.shards import heldout_range, open_indexed_dataset, read_doc_table, read_manifest
from tests.data_prep.labelled_shards import cluster_corpus

COUNTS = {"law": 50, "code": 50, "cooking": 50, "astronomy": 50}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cluster_corpus(tmp_path_factory.mktemp("cluster"), COUNTS, k=4)


def test_kmeans_recovers_the_domains(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    assert manifest["k"] == 4 and manifest["method"] == "kmeans"
    assert sorted(max(c["labels"], key=c["labels"].get) for c in manifest["clusters"]) == sorted(
        COUNTS
    )
    report = ReportConfig(str(clusters)).build().run()
    assert report["scores"]["purity"] == 1.0 and report["scores"]["nmi"] > 0.99
    assert Path(report["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    law = next(c for c in manifest["clusters"] if "law" in c["labels"])
    assert {"court", "plaintiff", "verdict"} & set(law["top_terms"])


def test_every_document_in_exactly_one_cluster(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    sources = ShardDocuments([s["prefix"] for s in manifest["shards"]])
    assignment = np.load(clusters / "assignment.npy")
    seen = np.zeros(len(sources), dtype=np.int64)
    documents = tokens = 0
    for cluster in manifest["clusters"]:
        prefix = clusters / cluster["prefix"]
        shard = read_manifest(prefix)  # each cluster is a complete, ordinary shard
        table = read_doc_table(prefix)
        data = open_indexed_dataset(prefix)
        origin = (
            sources.offsets[table.column("origin_shard").to_numpy()]
            + table.column("origin_doc").to_numpy()
        )
        np.add.at(seen, origin, 1)
        assert (assignment[origin] == cluster["id"]).all()
        for doc, source_doc in enumerate(origin):  # token for token, the source document
            first, last = data.document_indices[doc], data.document_indices[doc + 1]
            copied = np.concatenate([data[int(s)] for s in range(first, last)])
            np.testing.assert_array_equal(copied, np.concatenate(sources.sequences(source_doc)))
        assert shard["documents"] == cluster["documents"] == table.num_rows
        assert (
            shard["tokens"] == cluster["tokens"] == int(table.column("n_tokens").to_numpy().sum())
        )
        documents += cluster["documents"]
        tokens += cluster["tokens"]
    assert (seen == 1).all()
    assert documents == manifest["totals"]["documents"] == len(sources)
    assert tokens == manifest["totals"]["tokens"] == sum(s["tokens"] for s in manifest["shards"])
    assert sum(c["weight"] for c in manifest["clusters"]) == pytest.approx(1.0)


def test_sentence_split_documents_keep_their_sentences(tmp_path: Path) -> None:
    clusters = cluster_corpus(
        tmp_path, {"law": 20, "code": 20}, split="80,20,0", split_sentences=True
    )
    manifest = read_clusters(clusters)
    sources = ShardDocuments([s["prefix"] for s in manifest["shards"]])
    for cluster in manifest["clusters"]:
        prefix = clusters / cluster["prefix"]
        table, data = read_doc_table(prefix), open_indexed_dataset(prefix)
        origin = sources.offsets[table.column("origin_shard").to_numpy()]
        origin = origin + table.column("origin_doc").to_numpy()
        for doc, source_doc in enumerate(origin):
            first, last = data.document_indices[doc], data.document_indices[doc + 1]
            copied = [data[int(s)] for s in range(first, last)]
            original = sources.sequences(int(source_doc))
            assert len(copied) == len(original) >= 2  # one sequence per sentence
            for a, b in zip(copied, original, strict=True):
                np.testing.assert_array_equal(a, b)


def test_heldout_is_a_random_sample_of_the_cluster(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    for cluster in manifest["clusters"]:
        first, last = heldout_range(manifest["split"], cluster["documents"])
        assert (first, last) == (cluster["heldout"]["first_doc"], cluster["heldout"]["last_doc"])
        assert last - first >= 1
        origin = read_doc_table(clusters / cluster["prefix"]).column("origin_doc").to_numpy()
        assert not (np.diff(origin) > 0).all()  # written in a shuffled, not source, order


def test_rerun_is_a_noop(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    mtime = (clusters / "clusters.json").stat().st_mtime_ns
    config = ClusterConfig(
        manifest["embeddings"]["directory"], str(clusters), KMeansConfig(4), progress=False
    )
    assert config.build().run() == manifest
    assert (clusters / "clusters.json").stat().st_mtime_ns == mtime


def test_by_label_clusters_and_small_cluster_refused(tmp_path: Path) -> None:
    clusters = cluster_corpus(
        tmp_path / "a", {"law": 20, "code": 30, "cooking": 10}, split="90,10,0"
    )
    manifest = read_clusters(clusters)
    assert [c["name"] for c in manifest["clusters"]] == ["code", "cooking", "law"]
    assert [c["documents"] for c in manifest["clusters"]] == [30, 10, 20]
    with pytest.raises(ClusterError, match=r"\(1, 3\)\] are too small for split '90,10,0'"):
        cluster_corpus(tmp_path / "b", {"law": 20, "code": 30, "cooking": 3}, split="90,10,0")


def test_k_larger_than_documents(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="k=50 is larger than the number of documents"):
        cluster_corpus(tmp_path, {"law": 20, "code": 20}, k=50)


def test_label_scores() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array(["a", "a", "b", "b", "b", ""], dtype=object)
    scores = label_scores(clusters, labels)
    assert scores["purity"] == pytest.approx(4 / 5) and scores["labelled_documents"] == 5
    assert 0 < scores["nmi"] < 1
    assert label_scores(np.array([1, 0]), np.array(["x", "y"], dtype=object))["nmi"] == 1.0
    assert label_scores(clusters, np.array([""] * 6, dtype=object)) == {}


def test_corrupt_manifest(clusters: Path, tmp_path: Path) -> None:
    (tmp_path / "clusters.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ClusterError, match="format is 'other'"):
        read_clusters(tmp_path)
    with pytest.raises(ClusterError, match="did not finish"):
        read_clusters(tmp_path / "nothing")
