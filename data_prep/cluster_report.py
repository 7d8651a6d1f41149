"""`msplit data cluster-report`: a table, a PNG and, with source labels, purity and NMI.

The PNG shows cluster sizes (documents and token shares) and a 2-D PCA projection of a
sample of document embeddings coloured by cluster, centroids marked. Purity and normalised
mutual information (arithmetic normalisation, as scikit-learn's default) compare the
clusters with the documents' labels, read back from the cluster shards' doc tables; they
are left out when documents carry no label.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep.cluster import cluster_prefixes, load_centroids, read_clusters
from data_prep.shards import read_doc_table

REPORT_PNG = "report.png"
REPORT_JSON = "report.json"


@dataclass
class ReportConfig:
    clusters: str  # an `msplit data cluster` output directory
    output: str | None = None  # default: the clusters directory
    sample: int = 5000  # documents drawn in the projection
    seed: int = 0

    def build(self) -> ClusterReport:
        return ClusterReport(self)


def label_scores(clusters: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Purity and NMI of cluster ids against labels (documents labelled '' are left out)."""
    from sklearn.metrics import normalized_mutual_info_score

    keep = labels != ""
    clusters, labels = clusters[keep], labels[keep]
    if len(labels) == 0:
        return {}
    _, label_ids = np.unique(labels, return_inverse=True)
    counts = np.zeros((clusters.max() + 1, label_ids.max() + 1), dtype=np.int64)
    np.add.at(counts, (clusters, label_ids), 1)
    return {
        "purity": float(counts.max(axis=1).sum() / len(labels)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "labelled_documents": int(len(labels)),
        "labels": int(label_ids.max() + 1),
    }


class ClusterReport:
    def __init__(self, config: ReportConfig):
        self.config = config
        self.directory = Path(config.clusters)
        self.out = Path(config.output or config.clusters)

    def run(self) -> dict[str, Any]:
        manifest = read_clusters(self.directory)
        clusters, labels = self._cluster_labels(manifest)
        report = {
            "k": manifest["k"],
            "embedder": manifest["embedder"]["name"],
            "documents": manifest["totals"]["documents"],
            "tokens": manifest["totals"]["tokens"],
            "scores": label_scores(clusters, labels),
            "clusters": [
                {key: c[key] for key in ("id", "documents", "tokens", "weight", "top_terms")}
                | {"heldout": c["heldout"]["documents"], "top_label": _top_label(c)}
                for c in manifest["clusters"]
            ],
        }
        self.out.mkdir(parents=True, exist_ok=True)
        self._plot(manifest, report)
        report["png"] = str(self.out / REPORT_PNG)
        atomic.write_json(self.out / REPORT_JSON, report)
        return report

    def _cluster_labels(self, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(cluster, label) of every document, from the cluster shards' doc tables."""
        clusters, labels = [], []
        for cluster, prefix in zip(
            manifest["clusters"], cluster_prefixes(self.directory, manifest), strict=True
        ):
            column = read_doc_table(prefix).column("label").to_pylist()
            labels.extend(label or "" for label in column)
            clusters.append(np.full(len(column), cluster["id"], dtype=np.int64))
        return np.concatenate(clusters), np.array(labels, dtype=object)

    def _projection(self, manifest: dict[str, Any]) -> tuple[np.ndarray, ...] | None:
        """2-D PCA of a sample of embeddings and of the centroids, or None without embeddings."""
        from data_prep.embed import EmbeddingsError, open_embeddings

        try:
            embeddings = open_embeddings(manifest["embeddings"]["directory"])
        except EmbeddingsError as error:
            print(f"no projection: {error}", file=sys.stderr)
            return None
        assignment = np.load(self.directory / manifest["assignment"]["file"])
        rng = np.random.default_rng(self.config.seed)
        n = len(assignment)
        sample = np.sort(rng.choice(n, min(n, self.config.sample), replace=False))
        points = np.asarray(embeddings.rows[sample], dtype=np.float32)
        centroids = load_centroids(self.directory, manifest)
        mean = points.mean(axis=0)
        _, _, axes = np.linalg.svd(points - mean, full_matrices=False)
        return (points - mean) @ axes[:2].T, assignment[sample], (centroids - mean) @ axes[:2].T

    def _plot(self, manifest: dict[str, Any], report: dict[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = manifest["k"]
        colours = _colours(plt, k)
        figure, (sizes, scatter) = plt.subplots(1, 2, figsize=(14, 6))
        ids = np.arange(k)
        shares = [c["weight"] for c in manifest["clusters"]]
        docs = np.array([c["documents"] for c in manifest["clusters"]], dtype=float)
        sizes.bar(
            ids - 0.2,
            shares,
            0.4,
            color=colours,
            edgecolor="black",
            linewidth=0.5,
            label="token share",
        )
        sizes.bar(ids + 0.2, docs / docs.sum(), 0.4, color="grey", label="document share")
        sizes.set_xlabel("cluster")
        sizes.set_ylabel("share of corpus")
        sizes.legend()
        scores = report["scores"]
        title = f"k={k}, {manifest['embedder']['name']}"
        if scores:
            title += f", NMI {scores['nmi']:.3f}, purity {scores['purity']:.3f}"
        sizes.set_title(title)
        projected = self._projection(manifest)
        if projected is None:
            scatter.text(0.5, 0.5, "embeddings not found", ha="center")
        else:
            points, assigned, centroids = projected
            scatter.scatter(points[:, 0], points[:, 1], s=4, c=colours[assigned], alpha=0.6)
            scatter.scatter(centroids[:, 0], centroids[:, 1], marker="x", s=80, c="black")
            scatter.set_title(f"PCA of {len(points):,} sampled documents (x: unit-norm centroids)")
        figure.tight_layout()
        temp = atomic.temp_path(self.out / REPORT_PNG)
        figure.savefig(temp, format="png", dpi=100)
        plt.close(figure)
        atomic.publish(temp, self.out / REPORT_PNG)


def format_table(report: dict[str, Any]) -> list[str]:
    rows = [("cluster", "documents", "tokens", "weight", "held-out", "top label", "top terms")]
    for c in report["clusters"]:
        rows.append(
            (
                str(c["id"]),
                f"{c['documents']:,}",
                f"{c['tokens']:,}",
                f"{c['weight']:.4f}",
                str(c["heldout"]),
                c["top_label"],
                " ".join(c["top_terms"][:6]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    scores = report["scores"]
    if scores:
        lines.append(
            f"purity {scores['purity']:.4f}  NMI {scores['nmi']:.4f}  against "
            f"{scores['labels']} labels on {scores['labelled_documents']:,} documents"
        )
    return lines


def _colours(plt, k: int) -> np.ndarray:
    """Distinct qualitative colours while they last, a continuous map beyond."""
    if k <= 10:
        return plt.get_cmap("tab10")(np.arange(k))
    if k <= 20:
        return plt.get_cmap("tab20")(np.arange(k))
    return plt.get_cmap("turbo")(np.linspace(0, 1, k))


def _top_label(cluster: dict[str, Any]) -> str:
    labels = {label: n for label, n in cluster["labels"].items() if label}
    if not labels:
        return ""
    label = max(labels, key=labels.get)
    return f"{label} ({labels[label] / cluster['documents']:.0%})"
