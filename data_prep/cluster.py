"""`msplit data cluster`: k-means over document embeddings, per-cluster shards, a manifest.

Output directory ``OUT``:
- ``centroids.npy`` (k, dim) float32; ``assignment.npy`` (documents,) int32 cluster of each
  document in the shards' global order; ``distances.npy`` squared distance to it;
- ``cluster_XX.{bin,idx,docs.parquet,manifest.json}``: each cluster as a shard (see
  :mod:`data_prep.cluster_shards` for why the tokens are copied);
- ``embedder/``: the embedder's state, so a router needs only this directory;
- ``clusters.json``, written last: k, embedder, centroids, per-cluster documents, tokens,
  natural mixture weight (token share), held-out documents of megatron's split, top
  TF-IDF terms, label counts; totals that prove conservation of documents and tokens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep.cluster_shards import cluster_prefix, group_by_cluster, write_cluster_shards
from data_prep.doc_texts import ShardDocuments
from data_prep.embed import open_embeddings
from data_prep.kmeans import ClusterError, Clustering, KMeansConfig
from data_prep.shards import heldout_range

CLUSTERS_FORMAT = "megatron-split/clusters/v1"
MANIFEST_FILE = "clusters.json"
EMBEDDER_DIR = "embedder"


@dataclass
class ClusterConfig:
    embeddings: str  # an `msplit data embed` output directory
    output: str
    kmeans: KMeansConfig = field(default_factory=lambda: KMeansConfig(k=8))
    by_label: bool = False  # one cluster per doc-table label instead of k-means
    split: str = "98,2,0"  # megatron split of every cluster shard: train, held-out, test
    top_terms: int = 12
    terms_docs: int = 200  # documents per cluster read for its top terms
    progress: bool = True

    def __post_init__(self) -> None:
        heldout_range(self.split, 100)  # fail early on a bad split string

    def build(self) -> ClusterRun:
        return ClusterRun(self)


class ClusterRun:
    def __init__(self, config: ClusterConfig):
        self.config = config
        self.out = Path(config.output)

    def run(self) -> dict[str, Any]:
        config = self.config
        embeddings = open_embeddings(config.embeddings)
        documents = ShardDocuments(
            embeddings.shard_prefixes, embeddings.manifest["settings"]["max_tokens"]
        )
        embeddings.check_shards(documents)
        fingerprint = _digest(
            [
                embeddings.manifest["fingerprint"],
                asdict(config.kmeans),
                config.by_label,
                config.split,
                config.top_terms,
                config.terms_docs,
            ]
        )
        previous = _read_json(self.out / MANIFEST_FILE)
        if previous is not None and previous.get("fingerprint") == fingerprint:
            _log(f"clusters up to date: {self.out / MANIFEST_FILE}")
            return previous
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / MANIFEST_FILE).unlink(missing_ok=True)
        labels = documents.labels()
        if config.by_label:
            check_labelled(labels, documents.manifests)
            clustering, names = clusters_from_labels(
                embeddings.rows, labels, config.kmeans.batch_size
            )
        else:
            _log(
                f"k-means: k={config.kmeans.k} on {len(documents):,} documents x "
                f"{embeddings.rows.shape[1]} dims"
            )
            clustering, names = config.kmeans.build().fit(embeddings.rows), None
        k = len(clustering.centroids)
        sizes = np.bincount(clustering.labels, minlength=k)
        check_heldout(sizes, config.split)
        for name, array in (
            ("centroids", clustering.centroids),
            ("assignment", clustering.labels),
            ("distances", clustering.distances),
        ):
            _save_npy(self.out / f"{name}.npy", array)
        shard_manifests = write_cluster_shards(
            documents,
            clustering.labels,
            k,
            self.out,
            config.kmeans.seed,
            {"cluster_manifest": MANIFEST_FILE},
            config.progress,
        )
        _copy_tree(embeddings.state_dir, self.out / EMBEDDER_DIR)
        totals = {"documents": len(documents), "tokens": int(documents.token_counts().sum())}
        check_conservation(shard_manifests, totals)
        terms = top_terms(
            documents, clustering.labels, k, config.kmeans.seed, config.top_terms, config.terms_docs
        )
        clusters = cluster_records(
            shard_manifests, clustering, labels, names, terms, config.split, totals["tokens"]
        )
        kmeans = asdict(config.kmeans) | {"k": k}
        manifest = {
            "format": CLUSTERS_FORMAT,
            "k": k,
            "method": "label" if config.by_label else "kmeans",
            "embedder": {**embeddings.embedder_info, "state": EMBEDDER_DIR},
            "embeddings": {
                "directory": str(Path(config.embeddings).resolve()),
                "fingerprint": embeddings.manifest["fingerprint"],
            },
            "kmeans": {
                **kmeans,
                "gpu_used": clustering.gpu,
                "train_points": clustering.train_points,
                "train_seconds": round(clustering.train_seconds, 3),
                "assign_seconds": round(clustering.assign_seconds, 3),
                "reseeded": clustering.reseeded,
            },
            "centroids": {
                "file": "centroids.npy",
                "sha256": _file_sha256(self.out / "centroids.npy"),
            },
            "assignment": {"file": "assignment.npy", "distances": "distances.npy"},
            "split": config.split,
            "shards": documents.identity(),
            "totals": totals,
            "vocab_size": documents.manifests[0]["vocab_size"],
            "eod_id": documents.manifests[0]["eod_id"],
            "clusters": clusters,
            "fingerprint": fingerprint,
        }
        atomic.write_json(self.out / MANIFEST_FILE, manifest)
        return manifest


def cluster_records(
    shards: list[dict[str, Any]],
    clustering: Clustering,
    labels: np.ndarray,
    names: list[str] | None,
    terms: list[list[str]],
    split: str,
    total_tokens: int,
) -> list[dict[str, Any]]:
    """The manifest's entry of each cluster: its shard, share, held-out range and content."""
    records = []
    for c, shard in enumerate(shards):
        first, last = heldout_range(split, shard["documents"])
        members = clustering.labels == c
        records.append(
            {
                "id": c,
                "name": names[c] if names else None,
                "prefix": Path(shard["prefix"]).name,
                "documents": shard["documents"],
                "tokens": shard["tokens"],
                "weight": shard["tokens"] / total_tokens,
                "heldout": {"first_doc": first, "last_doc": last, "documents": last - first},
                "top_terms": terms[c],
                "labels": dict(Counter(labels[members].tolist()).most_common()),
                "mean_distance": float(clustering.distances[members].mean()),
            }
        )
    return records


def check_labelled(labels: np.ndarray, manifests: list[dict[str, Any]]) -> None:
    """Refuse clustering by label where no document has one (all would be one cluster)."""
    if labels.any():
        return
    keys = sorted({m["label_key"] for m in manifests if "label_key" in m})  # older: unknown
    read = f" (tokenize read label key {', '.join(map(repr, keys))})" if keys else ""
    raise ClusterError(
        f"--by-label: no document of the shards has a label{read}; tokenize with "
        "--label-key naming the field that holds one"
    )


def clusters_from_labels(
    rows: np.ndarray, labels: np.ndarray, batch_size: int
) -> tuple[Clustering, list[str]]:
    """One cluster per distinct document label (sorted); centroids are the labels' mean
    unit embeddings. A baseline to compare k-means with, and a router over known sources."""
    started = time.perf_counter()
    names, ids = np.unique(labels.astype(str), return_inverse=True)
    sums = np.zeros((len(names), rows.shape[1]), dtype=np.float64)
    for first in range(0, len(rows), batch_size):
        np.add.at(
            sums,
            ids[first : first + batch_size],
            np.asarray(rows[first : first + batch_size], dtype=np.float64),
        )
    centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    centroids = centroids.astype(np.float32)
    distances = np.empty(len(rows), dtype=np.float32)
    for first in range(0, len(rows), batch_size):
        block = np.asarray(rows[first : first + batch_size], dtype=np.float32)
        delta = block - centroids[ids[first : first + batch_size]]
        distances[first : first + len(block)] = np.einsum("ij,ij->i", delta, delta)
    seconds = time.perf_counter() - started
    clustering = Clustering(centroids, ids.astype(np.int32), distances, 0.0, seconds, 0, False)
    return clustering, [str(n) for n in names]


def check_heldout(sizes: np.ndarray, split: str) -> None:
    """Refuse clusters too small for megatron's split to hold out any of their documents.

    Evaluation needs every cluster's held-out set, and megatron's blend never finishes
    building a split with no documents in it."""
    short = [(c, int(n)) for c, n in enumerate(sizes) if np.subtract(*heldout_range(split, n)) == 0]
    if short:
        raise ClusterError(
            f"clusters (id, documents) {short} are too small for split {split!r} to hold out a "
            "document: use a smaller k, balanced assignment, or a larger held-out share"
        )


def check_conservation(shards: list[dict[str, Any]], totals: dict[str, int]) -> None:
    """Every document in exactly one cluster: counts of documents and tokens add up."""
    for key in ("documents", "tokens"):
        found = sum(int(s[key]) for s in shards)
        if found != totals[key]:
            raise ClusterError(f"cluster shards hold {found:,} {key}, the input {totals[key]:,}")


def top_terms(
    documents: ShardDocuments, labels: np.ndarray, k: int, seed: int, n_terms: int, n_docs: int
) -> list[list[str]]:
    """Each cluster's most distinctive words: TF-IDF over clusters (each a bag of its docs)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    grouped, bounds = group_by_cluster(labels, k, seed)
    bags = [
        " ".join(documents.texts(grouped[bounds[c] : min(bounds[c] + n_docs, bounds[c + 1])]))
        for c in range(k)
    ]
    vectorizer = TfidfVectorizer(
        sublinear_tf=True,
        stop_words="english",
        max_features=50_000,
        token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b",
    )
    try:
        weights = vectorizer.fit_transform(bags).toarray()
    except ValueError:  # no words at all (e.g. shards of raw ids)
        return [[] for _ in range(k)]
    vocabulary = vectorizer.get_feature_names_out()
    return [
        [str(vocabulary[i]) for i in np.argsort(-row, kind="stable")[:n_terms] if row[i] > 0]
        for row in weights
    ]


# ------------------------------------------------------------------ reading


def read_clusters(directory: str | Path) -> dict[str, Any]:
    """A finished cluster directory's manifest, with the paths of its files checked."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE if directory.is_dir() else directory
    manifest = _read_json(path)
    if manifest is None:
        raise ClusterError(f"{path} is missing or not JSON: `msplit data cluster` did not finish")
    if manifest.get("format") != CLUSTERS_FORMAT:
        raise ClusterError(f"{path}: format is {manifest.get('format')!r}, not {CLUSTERS_FORMAT}")
    for cluster in manifest["clusters"]:
        prefix = path.parent / cluster["prefix"]
        if not Path(f"{prefix}.manifest.json").is_file():
            raise ClusterError(f"{path}: cluster {cluster['id']} shard {prefix} is missing")
    return manifest


def load_centroids(directory: Path, manifest: dict[str, Any]) -> np.ndarray:
    path = directory / manifest["centroids"]["file"]
    if _file_sha256(path) != manifest["centroids"]["sha256"]:
        raise ClusterError(f"{path} changed since {directory / MANIFEST_FILE} was written")
    centroids = np.load(path)
    if centroids.shape != (manifest["k"], manifest["embedder"]["dim"]):
        raise ClusterError(
            f"{path}: shape {centroids.shape}, expected (k, dim) = "
            f"({manifest['k']}, {manifest['embedder']['dim']})"
        )
    return centroids


def cluster_prefixes(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    return [
        str(cluster_prefix(Path(directory), c["id"], manifest["k"])) for c in manifest["clusters"]
    ]


def _save_npy(path: Path, array: np.ndarray) -> None:
    temp = atomic.temp_path(path)
    with open(temp, "wb") as handle:
        np.save(handle, array)
    atomic.publish(temp, path)


def _copy_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)  # stateless embedders (MiniLM) have nothing to copy


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def _log(message: str) -> None:
    print(message, file=sys.stderr)
