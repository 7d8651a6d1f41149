from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.cluster import read_clusters
from data_prep.doc_texts import ShardDocuments
from data_prep.embedders import EmbedderError, TfidfParams, TfidfSvdEmbedder
from data_prep.kmeans import ClusterError
from eval.router import Router, Routing
from tests.data_prep.labelled_shards import cluster_corpus

COUNTS = {"law": 40, "code": 40, "cooking": 40, "astronomy": 40}


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cluster_corpus(tmp_path_factory.mktemp("router"), COUNTS, k=4)


def test_routes_documents_to_their_assigned_clusters(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    documents = ShardDocuments([s["prefix"] for s in manifest["shards"]])
    router = Router.from_clusters(clusters, batch_size=7)  # batches that do not divide n
    routing = router.route(documents.texts(range(len(documents))), top_k=4)
    np.testing.assert_array_equal(routing.nearest, np.load(clusters / "assignment.npy"))
    assert (np.diff(routing.distances, axis=1) >= 0).all()  # nearest first
    assert (np.sort(routing.clusters, axis=1) == np.arange(4)).all()


def test_routes_new_text_by_topic(clusters: Path) -> None:
    manifest = read_clusters(clusters)
    by_label = {max(c["labels"], key=c["labels"].get): c["id"] for c in manifest["clusters"]}
    router = Router.from_clusters(clusters)
    routing = router.route(
        [
            "the jury heard the testimony and the judge gave a ruling",
            "whisk the flour and butter then bake the dough in the oven",
            "the telescope saw a comet in the orbit of a distant planet",
            "the function will return an integer from the array",
        ],
    )
    expected = [by_label[label] for label in ("law", "cooking", "astronomy", "code")]
    assert routing.nearest.tolist() == expected


def test_ensemble_weights() -> None:
    routing = Routing(np.array([[2, 0]]), np.array([[0.2, 0.4]], dtype=np.float32))
    weights = routing.weights(temperature=0.1)
    np.testing.assert_allclose(weights, [[1 / (1 + np.exp(-2)), 1 - 1 / (1 + np.exp(-2))]])
    sharp = routing.weights(temperature=0.001)
    assert sharp[0, 0] > 0.999
    with pytest.raises(ValueError, match="temperature must be > 0"):
        routing.weights(0)


def test_another_embedder_is_refused(clusters: Path) -> None:
    other = TfidfSvdEmbedder(TfidfParams(dim=8, min_df=1))
    other.fit(["some other corpus entirely", "with other words in it", "and a third text"])
    with pytest.raises(EmbedderError, match="embedder mismatch on 'hash'"):
        Router.from_clusters(clusters, embedder=other)


def test_changed_embedder_state_or_centroids_are_refused(clusters: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "clusters"
    shutil.copytree(clusters, copy)
    manifest = json.loads((copy / "clusters.json").read_text())
    manifest["embedder"]["hash"] = "0" * 64  # centroids made by some other fitted TF-IDF
    (copy / "clusters.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbedderError, match="embedder mismatch on 'hash'"):
        Router.from_clusters(copy)
    shutil.copytree(clusters, tmp_path / "moved")
    np.save(tmp_path / "moved" / "centroids.npy", np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ClusterError, match="changed since"):
        Router.from_clusters(tmp_path / "moved")


def test_bad_top_k(clusters: Path) -> None:
    router = Router.from_clusters(clusters)
    with pytest.raises(ValueError, match=r"top_k must be in 1..4"):
        router.route(["text"], top_k=5)
