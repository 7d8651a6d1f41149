"""`msplit data embed | cluster | cluster-report`: the commands of the clustering stage.

:func:`add_commands` registers them on the subparsers of `msplit data` (data_prep.cli);
each sets ``run=handler``.
"""

from __future__ import annotations

import argparse
import json

from data_prep.arguments import positive_int
from data_prep.embedders import DEFAULT_MAX_TOKENS, EMBEDDER_NAMES


def add_commands(commands: argparse._SubParsersAction) -> None:
    _add_embed(commands)
    _add_cluster(commands)
    _add_report(commands)


def _add_embed(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "embed",
        help="embed every document of token shards (MiniLM or TF-IDF+SVD)",
        description="Write one unit-norm embedding per document of the shards to OUTPUT/"
        "embeddings.npy (a memmap, in chunks; a killed run resumes), with a manifest naming "
        "the embedder (name, version, hash). Each document's first --max-tokens tokens are "
        "decoded and embedded. TF-IDF (the default) clusters a multi-source corpus by source "
        "better than MiniLM and runs on CPUs; MiniLM wants a GPU (see README, Clustering).",
    )
    p.add_argument("--shards", nargs="+", required=True, metavar="PREFIX", help="shard prefixes")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument(
        "--embedder",
        choices=EMBEDDER_NAMES,
        default="tfidf",
        help="tfidf: TF-IDF -> TruncatedSVD -> L2 normalise; minilm: all-MiniLM-L6-v2 (fp16 "
        "on GPU) (default: tfidf)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="shard tokens of each document embedded (default: "
        + ", ".join(f"{n} for {name}" for name, n in DEFAULT_MAX_TOKENS.items())
        + ")",
    )
    p.add_argument("--batch-size", type=int, default=64, help="MiniLM batch size")
    p.add_argument(
        "--chunk-docs", type=int, default=8192, help="documents per resumable chunk (default: 8192)"
    )
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="dtype of the stored embeddings (default: float16)")  # fmt: skip
    p.add_argument("--device", help="MiniLM device (default: cuda when available, else cpu)")
    p.add_argument("--no-fp16", action="store_true", help="MiniLM in fp32 on GPU too")
    p.add_argument("--tfidf-dim", type=int, default=100, help="SVD dimensions (default: 100)")
    p.add_argument(
        "--fit-docs",
        type=int,
        default=20000,
        help="documents the TF-IDF embedder is fitted on (default: 20000)",
    )
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the TF-IDF fitting sample and SVD (default: 0)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from data_prep.embed import EmbedConfig
    from data_prep.embedders import EmbedderConfig, TfidfParams

    embedder = EmbedderConfig(
        name=args.embedder,
        device=args.device,
        batch_size=args.batch_size,
        fp16=not args.no_fp16,
        tfidf=TfidfParams(dim=args.tfidf_dim, seed=args.seed),
    )
    manifest = (
        EmbedConfig(
            shards=args.shards,
            output=args.output,
            embedder=embedder,
            max_tokens=args.max_tokens,
            chunk_docs=args.chunk_docs,
            dtype=args.dtype,
            fit_docs=args.fit_docs,
            seed=args.seed,
            progress=not args.no_progress,
        )
        .build()
        .run()
    )
    print(
        f"{manifest['documents']:,} documents x {manifest['dim']} dims "
        f"({manifest['embedder']['name']}, {manifest['docs_per_s']:,.0f} docs/s) -> {args.output}"
    )
    return 0


def _add_cluster(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "cluster",
        help="k-means over embeddings; write per-cluster shards and a cluster manifest",
        description="Cluster document embeddings with faiss k-means (GPU when available), "
        "assign every document, copy each cluster's documents into a shard OUTPUT/cluster_XX "
        "(with a held-out split) and write OUTPUT/clusters.json.",
    )
    p.add_argument("--embeddings", required=True, help="`msplit data embed` output directory")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--k", type=positive_int,
                   help="number of clusters (required unless --by-label)")  # fmt: skip
    p.add_argument(
        "--by-label",
        action="store_true",
        help="one cluster per document label instead of k-means (a baseline); the labels "
        "decide the number of clusters, so not with --k",
    )
    p.add_argument("--no-spherical", action="store_true", help="Euclidean, not cosine, k-means")
    p.add_argument("--niter", type=int, default=20, help="k-means iterations (default: 20)")
    p.add_argument(
        "--restarts",
        type=int,
        default=3,
        help="k-means runs; the lowest objective wins (default: 3)",
    )
    p.add_argument(
        "--max-points-per-centroid",
        type=int,
        default=256,
        help="training sample size per centroid (default: 256)",
    )
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of k-means (sample, initialisation) and of the order of "
                   "each cluster shard's documents, which decides the held-out ones "
                   "(default: 0)")  # fmt: skip
    p.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto",
                   help="k-means on a GPU: auto when faiss sees one (default), yes (an error "
                   "without one), or no")  # fmt: skip
    p.add_argument(
        "--balanced",
        action="store_true",
        help="capacity-constrained assignment: at most ceil(n/k*(1+slack)) per cluster",
    )
    p.add_argument("--balance-slack", type=float, default=0.0,
                   help="with --balanced: how far over an even share n/k a cluster may grow, "
                   "as a fraction (default: 0.0)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=65536, help="documents per assignment batch")
    p.add_argument(
        "--empty",
        choices=["reseed", "error"],
        default="reseed",
        help="an empty cluster after assignment: re-seed it at the farthest "
        "document and assign again (default), or stop",
    )
    p.add_argument(
        "--split",
        default="98,2,0",
        help="megatron split of each cluster shard: train,held-out,test (default: 98,2,0)",
    )
    p.add_argument("--top-terms", type=int, default=12, help="TF-IDF terms listed per cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_cluster)


def _run_cluster(args: argparse.Namespace) -> int:
    from data_prep.cluster import ClusterConfig
    from data_prep.cluster_report import ReportConfig, format_table
    from data_prep.kmeans import KMeansConfig

    if args.k is None and not args.by_label:
        raise ValueError("give --k (or --by-label)")
    if args.k is not None and args.by_label:
        raise ValueError("--by-label makes one cluster per label: give it without --k")
    kmeans = KMeansConfig(
        k=1 if args.by_label else args.k,  # with --by-label, k-means does not run
        spherical=not args.no_spherical,
        niter=args.niter,
        restarts=args.restarts,
        max_points_per_centroid=args.max_points_per_centroid,
        seed=args.seed,
        gpu=args.gpu,
        balanced=args.balanced,
        balance_slack=args.balance_slack,
        batch_size=args.batch_size,
        empty=args.empty,
    )
    ClusterConfig(
        embeddings=args.embeddings,
        output=args.output,
        kmeans=kmeans,
        by_label=args.by_label,
        split=args.split,
        top_terms=args.top_terms,
        progress=not args.no_progress,
    ).build().run()
    report = ReportConfig(args.output).build().run()
    print("\n".join(format_table(report)))
    return 0


def _add_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "cluster-report",
        help="table, PNG (sizes, 2-D projection) and purity/NMI against labels",
        description="Summarise a cluster directory: a table on stdout, report.png and "
        "report.json (purity and NMI when documents carry source labels).",
    )
    p.add_argument("--clusters", required=True, help="`msplit data cluster` output directory")
    p.add_argument("--output", help="where report.png/report.json go (default: --clusters)")
    p.add_argument("--sample", type=int, default=5000, help="documents in the projection")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the projection's document sample (default: 0)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from data_prep.cluster_report import ReportConfig, format_table

    report = ReportConfig(args.clusters, args.output, args.sample, args.seed).build().run()
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_table(report)))
    return 0
