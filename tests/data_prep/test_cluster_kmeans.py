from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from data_prep.kmeans import ClusterError, KMeansConfig


def blobs(sizes: list[int], dim: int = 16, spread: float = 0.1, seed: int = 0) -> np.ndarray:
    """Unit vectors around len(sizes) random directions, `sizes[i]` around the i-th."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    which = np.repeat(np.arange(len(sizes)), sizes)
    points = centres[which] + spread * rng.normal(size=(len(which), dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_kmeans_finds_blobs_deterministically() -> None:
    rows = blobs([300, 200, 100])
    first = KMeansConfig(3, seed=1).build().fit(rows)
    again = KMeansConfig(3, seed=1).build().fit(rows)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert sorted(np.bincount(first.labels).tolist()) == [100, 200, 300]
    np.testing.assert_allclose(np.linalg.norm(first.centroids, axis=1), 1.0, atol=1e-5)
    # Distances are squared L2 to the assigned centroid.
    delta = rows - first.centroids[first.labels]
    np.testing.assert_allclose(first.distances, (delta**2).sum(axis=1), atol=1e-5)


def test_training_sample_is_bounded_per_centroid() -> None:
    rows = blobs([2000, 2000])
    clustering = KMeansConfig(2, max_points_per_centroid=50).build().fit(rows)
    assert clustering.train_points == 100
    assert len(clustering.labels) == 4000


def test_balanced_assignment_respects_capacity() -> None:
    rows = blobs([900, 100])
    plain = KMeansConfig(2).build().fit(rows)
    assert sorted(np.bincount(plain.labels).tolist()) == [100, 900]
    balanced = KMeansConfig(2, balanced=True).build().fit(rows)
    assert np.bincount(balanced.labels).tolist() == [500, 500]
    slack = KMeansConfig(3, balanced=True, balance_slack=0.2, batch_size=128).build().fit(rows)
    assert np.bincount(slack.labels).max() <= int(np.ceil(1000 / 3 * 1.2))
    assert (slack.labels >= 0).all() and len(slack.labels) == 1000


def test_empty_cluster_is_reseeded_or_refused() -> None:
    rows = blobs([200, 200], dim=8)
    centroids = np.stack([rows[0], rows[-1], -rows.mean(axis=0) * 5])  # no row is nearest
    with pytest.raises(ClusterError, match=r"clusters \[2\] are empty after assigning all 400"):
        KMeansConfig(3, empty="error").build().assign_nonempty(rows, centroids.copy())
    labels, distances, reseeded = KMeansConfig(3).build().assign_nonempty(rows, centroids)
    assert reseeded == [2]
    assert (np.bincount(labels, minlength=3) > 0).all()
    assert len(labels) == 400  # every document still placed once


def test_duplicate_documents_cannot_fill_k_clusters() -> None:
    rows = np.repeat(blobs([1, 1], dim=8), 50, axis=0)  # two distinct points
    kmeans = KMeansConfig(3).build()
    centroids = np.stack([rows[0], rows[-1], -rows[0]])
    with pytest.raises(ClusterError, match="stay empty after 5 re-seedings"):
        kmeans.assign_nonempty(rows, centroids)


def test_bad_settings() -> None:
    with pytest.raises(ClusterError, match="k must be >= 1"):
        KMeansConfig(0)
    with pytest.raises(ClusterError, match="empty must be one of"):
        KMeansConfig(2, empty="ignore")
    with pytest.raises(ClusterError, match="k=5 is larger than the number of documents"):
        KMeansConfig(5).build().fit(blobs([2, 2]))


def test_memory_stays_bounded_at_a_million_documents(tmp_path: Path) -> None:
    n, dim, k = 1_000_000, 64, 16
    path = tmp_path / "rows.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim))
    for first in range(0, n, 100_000):
        which = rng.integers(0, k, 100_000)
        rows[first : first + 100_000] = centres[which] + 0.3 * rng.normal(size=(100_000, dim))
    rows.flush()
    del rows
    rows = np.load(path, mmap_mode="r")
    full_copy = n * dim * 4
    for balanced, bound in ((False, full_copy / 4), (True, full_copy * 3 / 4)):
        tracemalloc.start()
        clustering = KMeansConfig(k, restarts=1, balanced=balanced).build().fit(rows)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Plain: labels and distances (8 MB), one batch, the training sample. Balanced adds
        # `candidates` (id, distance) pairs per document: O(n), whatever the dimension.
        assert peak < bound, f"balanced={balanced}: peak {peak / 1e6:.0f} MB"
        sizes = np.bincount(clustering.labels, minlength=k)
        assert sizes.sum() == n and (sizes > 0).all()
    assert sizes.tolist() == [n // k] * k
