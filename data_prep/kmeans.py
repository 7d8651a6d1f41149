"""k-means on document embeddings with faiss, and assignment of every document in batches.

Training reads a seeded sample of at most ``max_points_per_centroid * k`` rows (faiss's own
default of 256 per centroid), so its memory does not grow with the corpus; assignment
streams the rows in batches of ``batch_size`` and keeps only one label (int32) and one
squared distance (float32) per document. Spherical k-means works on unit vectors and keeps
unit centroids: squared distance is then ``2 - 2 cos``.

Balanced assignment (c-BTM's capacity constraint) caps every cluster at
``ceil(n / k * (1 + slack))`` documents: documents propose to their nearest centroids in
rounds (nearest first) and each centroid accepts its closest proposals up to its free
capacity; documents left over re-propose among the centroids that still have room.

Empty clusters after assignment (a centroid no document is nearest to, e.g. trained on a
sample that the full corpus does not resemble) are an error with ``empty="error"``. With
``empty="reseed"`` (the default) each empty centroid is moved onto the document farthest
from its own centroid (taken from clusters of two or more documents) and every document is
assigned again; this repeats at most ``MAX_RESEEDS`` times, then stops with an error.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

EMPTY_POLICIES = ("reseed", "error")
GPU_CHOICES = ("auto", "yes", "no")
MAX_RESEEDS = 5


class ClusterError(ValueError):
    """Clustering that cannot run on its input, or ends in a state the user must resolve."""


@dataclass
class KMeansConfig:
    k: int
    spherical: bool = True
    niter: int = 20
    restarts: int = 3  # faiss nredo: the run with the lowest objective is kept
    max_points_per_centroid: int = 256
    seed: int = 0
    gpu: str = "auto"
    balanced: bool = False
    balance_slack: float = 0.0  # capacity = ceil(n / k * (1 + slack))
    candidates: int = 8  # nearest centroids each document proposes to (balanced)
    batch_size: int = 65536
    empty: str = "reseed"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ClusterError(f"k must be >= 1, not {self.k}")
        if self.empty not in EMPTY_POLICIES:
            raise ClusterError(f"empty must be one of {EMPTY_POLICIES}, not {self.empty!r}")
        if self.gpu not in GPU_CHOICES:
            raise ClusterError(f"gpu must be one of {GPU_CHOICES}, not {self.gpu!r}")
        if self.balance_slack < 0 or self.batch_size < 1 or self.candidates < 1:
            raise ClusterError("balance_slack must be >= 0; batch_size, candidates >= 1")

    def build(self) -> KMeans:
        return KMeans(self)


@dataclass
class Clustering:
    centroids: np.ndarray  # (k, dim) float32
    labels: np.ndarray  # (n,) int32
    distances: np.ndarray  # (n,) float32, squared L2 to the assigned centroid
    train_seconds: float
    assign_seconds: float
    train_points: int
    gpu: bool
    reseeded: list[int] = field(default_factory=list)  # clusters re-seeded, in order


class KMeans:
    def __init__(self, config: KMeansConfig):
        self.config = config

    def use_gpu(self) -> bool:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if self.config.gpu == "yes" and gpus == 0:
            raise ClusterError("gpu=yes but faiss sees no GPU (install faiss-gpu)")
        return self.config.gpu != "no" and gpus > 0

    def fit(self, rows: np.ndarray) -> Clustering:
        """Train on a sample of `rows` (n, dim), then assign every row."""
        started = time.perf_counter()
        centroids, n_train, gpu = self.train(rows)
        trained = time.perf_counter()
        labels, distances, reseeded = self.assign_nonempty(rows, centroids)
        return Clustering(
            centroids,
            labels,
            distances,
            trained - started,
            time.perf_counter() - trained,
            n_train,
            gpu,
            reseeded,
        )

    def assign_nonempty(
        self, rows: np.ndarray, centroids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Assign every row, then resolve empty clusters by the `empty` policy.

        Returns labels, distances and the clusters re-seeded (in order); `centroids` of
        re-seeded clusters are updated in place."""
        labels, distances = self.assign(rows, centroids)
        reseeded: list[int] = []
        for attempt in range(MAX_RESEEDS + 1):
            empty = np.flatnonzero(np.bincount(labels, minlength=len(centroids)) == 0)
            if len(empty) == 0:
                return labels, distances, reseeded
            if self.config.empty == "error":
                raise ClusterError(
                    f"clusters {empty.tolist()} are empty after assigning all {len(rows):,} "
                    "documents (use empty='reseed', or a smaller k)"
                )
            if attempt == MAX_RESEEDS:
                break
            self._reseed(rows, centroids, labels, distances, empty)
            reseeded.extend(empty.tolist())
            labels, distances = self.assign(rows, centroids)
        raise ClusterError(
            f"clusters {empty.tolist()} stay empty after {MAX_RESEEDS} re-seedings: "
            "the documents have fewer distinct embeddings than k"
        )

    def train(self, rows: np.ndarray) -> tuple[np.ndarray, int, bool]:
        import faiss

        config = self.config
        n, dim = rows.shape
        if config.k > n:
            raise ClusterError(f"k={config.k} is larger than the number of documents ({n:,})")
        n_train = min(n, config.k * config.max_points_per_centroid)
        rng = np.random.default_rng(config.seed)
        sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else slice(None)
        points = self._prepare(rows[sample])
        gpu = self.use_gpu()
        kmeans = faiss.Kmeans(
            dim,
            config.k,
            niter=config.niter,
            nredo=config.restarts,
            seed=config.seed,
            spherical=config.spherical,
            gpu=gpu,
            verbose=False,
            max_points_per_centroid=config.max_points_per_centroid,
            min_points_per_centroid=1,  # small corpora are fine; faiss would only warn
        )
        kmeans.train(points)
        return np.ascontiguousarray(kmeans.centroids, dtype=np.float32), n_train, gpu

    def assign(self, rows: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest (or, balanced, capacity-constrained) centroid of every row, in batches."""
        if self.config.balanced:
            return self._balanced_assign(rows, centroids)
        n = len(rows)
        labels = np.empty(n, dtype=np.int32)
        distances = np.empty(n, dtype=np.float32)
        index = self._index(centroids)
        for first in range(0, n, self.config.batch_size):
            last = min(first + self.config.batch_size, n)
            found_distances, found = index.search(self._prepare(rows[first:last]), 1)
            labels[first:last], distances[first:last] = found[:, 0], found_distances[:, 0]
        return labels, distances

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self.config.spherical:
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        return block

    def _index(self, centroids: np.ndarray):
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return index

    def _candidates(
        self, rows: np.ndarray, docs: np.ndarray, centroids: np.ndarray, open_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest open centroids (ids into all centroids) of documents `docs`, in batches."""
        m = min(self.config.candidates, len(open_ids))
        index = self._index(centroids[open_ids])
        ids = np.empty((len(docs), m), dtype=np.int32)
        dists = np.empty((len(docs), m), dtype=np.float32)
        for first in range(0, len(docs), self.config.batch_size):
            chunk = docs[first : first + self.config.batch_size]
            found_distances, found = index.search(self._prepare(rows[chunk]), m)
            ids[first : first + len(chunk)] = open_ids[found]
            dists[first : first + len(chunk)] = found_distances
        return ids, dists

    def _balanced_assign(
        self, rows: np.ndarray, centroids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n, k = len(rows), len(centroids)
        capacity = math.ceil(n / k * (1 + self.config.balance_slack))
        free = np.full(k, capacity, dtype=np.int64)
        labels = np.full(n, -1, dtype=np.int32)
        distances = np.zeros(n, dtype=np.float32)
        pending = np.arange(n)
        while len(pending):
            ids, dists = self._candidates(rows, pending, centroids, np.flatnonzero(free > 0))
            for rank in range(ids.shape[1]):
                waiting = labels[pending] < 0
                docs, want, dist = pending[waiting], ids[waiting, rank], dists[waiting, rank]
                order = np.lexsort((dist, want))  # by centroid, closest first
                docs, want, dist = docs[order], want[order], dist[order]
                starts = np.searchsorted(want, np.arange(k))
                place = np.arange(len(want)) - starts[want]  # rank within the centroid's queue
                accepted = place < free[want]
                labels[docs[accepted]] = want[accepted]
                distances[docs[accepted]] = dist[accepted]
                free -= np.bincount(want[accepted], minlength=k)
            pending = pending[labels[pending] < 0]
        return labels, distances

    def _reseed(
        self,
        rows: np.ndarray,
        centroids: np.ndarray,
        labels: np.ndarray,
        distances: np.ndarray,
        empty: np.ndarray,
    ) -> None:
        sizes = np.bincount(labels, minlength=len(centroids))
        farthest = np.argsort(-distances, kind="stable")
        chosen = []
        for doc in farthest:
            if len(chosen) == len(empty):
                break
            if sizes[labels[doc]] > 1:
                sizes[labels[doc]] -= 1
                chosen.append(doc)
        if len(chosen) < len(empty):
            raise ClusterError(
                f"cannot re-seed empty clusters {empty.tolist()}: too few documents to move"
            )
        centroids[empty] = self._prepare(rows[np.array(chosen)])
        print(
            f"re-seeded empty clusters {empty.tolist()} at their farthest documents",
            file=sys.stderr,
        )
