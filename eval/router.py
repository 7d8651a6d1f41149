"""Route texts to clusters: the embedder and centroids of a cluster directory, batched.

``Router.from_clusters(DIR).route(texts)`` embeds each text with the embedder the clusters
were made with (its recorded name, dimension and hash are checked, so centroids are never
compared with vectors of another embedding space) and returns its nearest centroids with
squared L2 distances. ``Routing.weights`` gives c-BTM's ensemble weights,
softmax(-distance / T) over the top-k clusters (distances are already squared).

Routing is nearest-centroid; documents placed by balanced (capacity-constrained)
assignment may sit in a cluster other than their nearest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.cluster import load_centroids, read_clusters
from data_prep.embedders import Embedder, check_same_embedder, load_embedder


@dataclass
class Routing:
    clusters: np.ndarray  # (n, top_k) int64, nearest first
    distances: np.ndarray  # (n, top_k) float32 squared L2 distances

    @property
    def nearest(self) -> np.ndarray:
        return self.clusters[:, 0]

    def weights(self, temperature: float = 0.1) -> np.ndarray:
        """(n, top_k) ensemble weights softmax(-d / T), each row summing to 1."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, not {temperature}")
        logits = -self.distances.astype(np.float64) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)


class Router:
    def __init__(self, centroids: np.ndarray, embedder: Embedder, batch_size: int = 256):
        if centroids.ndim != 2 or centroids.shape[1] != embedder.dim:
            raise ValueError(
                f"centroids of shape {centroids.shape} do not fit embedder {embedder.name} "
                f"of dimension {embedder.dim}"
            )
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.embedder = embedder
        self.batch_size = batch_size
        self.index = faiss.IndexFlatL2(self.centroids.shape[1])
        self.index.add(self.centroids)

    @classmethod
    def from_clusters(
        cls,
        directory: str | Path,
        embedder: Embedder | None = None,
        device: str | None = None,
        batch_size: int = 256,
    ) -> Router:
        """The router of a cluster directory; an `embedder` given must be the recorded one."""
        directory = Path(directory)
        manifest = read_clusters(directory)
        directory = directory if directory.is_dir() else directory.parent
        recorded = manifest["embedder"]
        if embedder is None:
            embedder = load_embedder(recorded, directory / recorded["state"], device)
        else:
            check_same_embedder(recorded, embedder.info())
        return cls(load_centroids(directory, manifest), embedder, batch_size)

    @property
    def k(self) -> int:
        return len(self.centroids)

    def route(self, texts: Sequence[str], top_k: int = 1) -> Routing:
        if not 1 <= top_k <= self.k:
            raise ValueError(f"top_k must be in 1..{self.k}, not {top_k}")
        clusters = np.empty((len(texts), top_k), dtype=np.int64)
        distances = np.empty((len(texts), top_k), dtype=np.float32)
        for first in range(0, len(texts), self.batch_size):
            batch = list(texts[first : first + self.batch_size])
            found_distances, found = self.index.search(self.embedder.embed(batch), top_k)
            clusters[first : first + len(batch)] = found
            distances[first : first + len(batch)] = found_distances
        return Routing(clusters, distances)
