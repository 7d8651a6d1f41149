"""Cluster-aware datasets through megatron.core's blended builder, with the blending
failures users report as regression tests: extreme weights, tiny clusters, k = 64."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from megatron_split.config import ConfigError
from megatron_split.data.clusters import ClusterDataConfig
from tests.data_prep.labelled_shards import cluster_corpus

SEQ = 32


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """megatron's blending asks torch.distributed for the rank: one gloo process."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clusters, one per label in sorted order: code 60, cooking 6, law 120 documents."""
    counts = {"law": 120, "code": 60, "cooking": 6}
    return cluster_corpus(tmp_path_factory.mktemp("clusters"), counts, split="80,20,0")


def shares(blend, k: int) -> np.ndarray:
    return np.bincount(blend.dataset_index, minlength=k) / len(blend)


def tokens_of(dataset, n: int) -> np.ndarray:
    return np.stack([np.asarray(dataset[i]["tokens"]) for i in range(n)])


def test_trunk_at_natural_weights(clusters: Path, tmp_path: Path) -> None:
    data = ClusterDataConfig(str(clusters)).build()
    natural = data.natural_weights()
    tokens = np.array([c["tokens"] for c in data.manifest["clusters"]])
    np.testing.assert_allclose(natural, tokens / tokens.sum())  # token shares
    assert natural[1] < 0.1  # the 6-document cluster
    train, valid = data.trunk().build(data.tokenizer(), SEQ, 4000, 200, tmp_path)
    np.testing.assert_allclose(shares(train, 3), natural, atol=0.01)
    assert len(valid) >= 200 and set(np.unique(valid.dataset_index)) == {0, 1, 2}


@pytest.mark.parametrize("weights", [[0.001, 0.999, 0.0], [0.999, 0.0, 0.001], {2: 1.0}])
def test_trunk_at_extreme_weights(clusters: Path, tmp_path: Path, weights) -> None:
    data = ClusterDataConfig(str(clusters)).build()
    config = data.trunk(weights)
    wanted = [weights.get(i, 0.0) for i in range(3)] if isinstance(weights, dict) else weights
    assert len(config.paths) == sum(w > 0 for w in wanted)  # weight 0: left out of the blend
    train, _ = config.build(data.tokenizer(), SEQ, 5000, 100, tmp_path)
    kept = [w for w in wanted if w > 0]
    if len(kept) > 1:
        measured = shares(train, len(kept))
        np.testing.assert_allclose(measured, np.array(kept) / sum(kept), atol=2e-4)
        assert measured.min() > 0  # the 0.001 cluster is sampled, not rounded away
    assert len(train) >= 5000


def test_branch_heldout_is_the_trunk_heldout(clusters: Path, tmp_path: Path) -> None:
    data = ClusterDataConfig(str(clusters)).build()
    _, trunk_valid = data.trunk().build(data.tokenizer(), SEQ, 500, 100, tmp_path / "t")
    for cluster, record in enumerate(data.manifest["clusters"]):
        train, valid = data.branch(cluster).build(data.tokenizer(), SEQ, 300, 50, tmp_path)
        heldout = np.arange(record["heldout"]["first_doc"], record["heldout"]["last_doc"])
        np.testing.assert_array_equal(valid.indices, heldout)
        np.testing.assert_array_equal(trunk_valid.datasets[cluster].indices, heldout)
        assert not set(train.indices.tolist()) & set(heldout.tolist())
        evaluation = data.heldout(cluster, SEQ, 50, tmp_path / "eval")
        np.testing.assert_array_equal(evaluation.indices, heldout)
        np.testing.assert_array_equal(tokens_of(evaluation, 5), tokens_of(valid, 5))


def test_order_is_deterministic_and_resumable(clusters: Path, tmp_path: Path) -> None:
    data = ClusterDataConfig(str(clusters), seed=7).build()
    first, _ = data.trunk().build(data.tokenizer(), SEQ, 400, 50, tmp_path / "a")
    again, _ = data.trunk().build(data.tokenizer(), SEQ, 400, 50, tmp_path / "b")  # no cache
    np.testing.assert_array_equal(tokens_of(first, 64), tokens_of(again, 64))
    # A run resumed at consumed_samples=40 reads samples 40.. of the same dataset.
    resumed, _ = data.trunk().build(data.tokenizer(), SEQ, 400, 50, tmp_path / "a")
    np.testing.assert_array_equal(
        tokens_of(first, 64)[40:],
        np.stack([np.asarray(resumed[i]["tokens"]) for i in range(40, 64)]),
    )
    other, _ = (
        ClusterDataConfig(str(clusters), seed=8)
        .build()
        .trunk()
        .build(data.tokenizer(), SEQ, 400, 50, tmp_path / "c")
    )
    assert not np.array_equal(tokens_of(first, 64), tokens_of(other, 64))


def test_many_clusters(tmp_path: Path) -> None:
    counts = {f"topic{i:02d}": 4 + i % 3 for i in range(64)}
    directory = cluster_corpus(tmp_path / "corpus", counts, split="50,50,0", n_shards=1)
    data = ClusterDataConfig(str(directory)).build()
    assert data.k == 64
    train, valid = data.trunk().build(data.tokenizer(), SEQ, 6400, 640, tmp_path)
    np.testing.assert_allclose(shares(train, 64), data.natural_weights(), atol=0.002)
    assert len(np.unique(valid.dataset_index)) == 64
    branch, _ = data.branch(63).build(data.tokenizer(), SEQ, 100, 10, tmp_path)
    assert len(branch) >= 100


def test_bad_weights_and_clusters(clusters: Path) -> None:
    data = ClusterDataConfig(str(clusters)).build()
    with pytest.raises(ConfigError, match="2 given for k=3"):
        data.trunk([0.5, 0.5])
    with pytest.raises(ConfigError, match="need finite, >= 0, positive sum"):
        data.trunk([1.0, -0.5, 0.5])
    with pytest.raises(ConfigError, match="cluster 3 out of range"):
        data.branch(3)
    with pytest.raises(ConfigError, match="cluster 5 out of range"):
        data.trunk({5: 1.0})


def test_cluster_without_heldout_is_refused_not_hung(clusters: Path, tmp_path: Path) -> None:
    """megatron loops forever building a split with no documents; refuse it up front."""
    manifest = json.loads((clusters / "clusters.json").read_text())
    manifest["clusters"][2]["heldout"]["documents"] = 0  # as an older writer could leave it
    for cluster in manifest["clusters"]:
        cluster["prefix"] = str(clusters / cluster["prefix"])
    (tmp_path / "clusters.json").write_text(json.dumps(manifest))
    data = ClusterDataConfig(str(tmp_path)).build()
    with pytest.raises(ConfigError, match=r"clusters \[2\] have no held-out document"):
        data.trunk()
    with pytest.raises(ConfigError, match=r"clusters \[2\] have no held-out document"):
        data.branch(2)
    assert data.trunk([1, 1, 0]).paths == data.prefixes[:2]  # weight 0 leaves it out
    with pytest.raises(ConfigError, match="no readable cluster manifest"):
        ClusterDataConfig(str(tmp_path / "missing")).build()
