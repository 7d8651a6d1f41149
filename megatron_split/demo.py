"""`msplit demo`: split model training end to end, on this machine, from registry packages.

Stages (each skipped when its output is already complete, so a rerun resumes):
  1. corpus      a labelled multi-domain JSONL slice built from installed packages
  2. tokenizer   a byte-level BPE trained on it
  3. shards      Megatron indexed shards + document table
  4. embeddings  TF-IDF -> SVD document embeddings (MiniLM with --embedder minilm)
  5. clusters    k-means into k domains, one shard per cluster, held-out split, report
  6. trunk       a tiny GPT (configs/tiny.yaml) pretrained on the cluster mixture
  7. branches    one continued-pretraining run per cluster, from the trunk's last checkpoint
  8. eval        every model on every cluster's held-out documents, from the checkpoints

It ends with a table of each cluster's held-out loss: the trunk's, and its specialist's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from megatron_split.config import load_config

log = logging.getLogger("msplit.demo")
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit demo",
        description=__doc__.split("\n\n")[0],
        epilog="Extra dotted.key=value arguments override the trunk config (configs/tiny.yaml).",
    )
    parser.add_argument("--out", default="runs/demo", help="where every stage writes")
    parser.add_argument("--max-mb", type=float, default=3.0, help="corpus size (all sources)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--embedder", choices=["tfidf", "minilm"], default="tfidf")
    parser.add_argument("--k", type=int, default=4, help="clusters (= branches)")
    parser.add_argument("--branch-steps", type=int, default=40, help="CPT steps per branch")
    parser.add_argument("--config", default=str(REPO_CONFIGS / "tiny.yaml"), help="trunk config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for the trunk config")
    return parser.parse_args(argv)


def stage(name: str, done: Path, run: Callable[[], int]) -> None:
    """Run a stage unless its output ``done`` exists (stages write it last)."""
    stages = logging.getLogger("msplit.stage")
    if done.exists():
        stages.info("[%s] done already (%s)", name, done)
        return
    stages.info("[%s] running", name)
    code = run()
    if code:
        raise SystemExit(f"msplit: stage {name} failed with exit code {code}")


def prepare_clusters(
    out: Path,
    jsonl: list[str],
    vocab_size: int,
    label_key: str,
    embedder: str,
    clustering: list[str],
) -> Path:
    """Tokenizer, shards, embeddings and clusters of JSONL documents, under ``out``, each
    stage skipped when done; returns the cluster directory. ``clustering``: the
    `msplit data cluster` options that choose the clusters (``--k K`` or ``--by-label``)."""
    from data_prep import cli as data_cli

    tokenizer, shards = out / "tokenizer.json", out / "shards" / "corpus"
    embeddings, clusters = out / "embeddings", out / "clusters"
    stage(
        "tokenizer",
        tokenizer,
        lambda: data_cli.main(
            ["train-tokenizer", "--input", *jsonl, "--output", str(tokenizer),
             "--vocab-size", str(vocab_size)]
        ),
    )  # fmt: skip
    stage(
        "shards",
        Path(f"{shards}.manifest.json"),
        lambda: data_cli.main(
            ["tokenize", "--input", *jsonl, "--output-prefix", str(shards),
             "--tokenizer", f"hf:{tokenizer}", "--append-eod", "--label-key", label_key,
             "--workers", "2"]
        ),
    )  # fmt: skip
    stage(
        "embeddings",
        embeddings / "embeddings.manifest.json",
        lambda: data_cli.main(
            ["embed", "--shards", str(shards), "--output", str(embeddings),
             "--embedder", embedder]
        ),
    )  # fmt: skip
    stage(
        "clusters",
        clusters / "clusters.json",
        lambda: data_cli.main(
            ["cluster", "--embeddings", str(embeddings), "--output", str(clusters),
             *clustering, "--split", "90,10,0"]
        ),
    )  # fmt: skip
    return clusters


def main(argv: list[str] | None = None) -> int:
    from data_prep import cli as data_cli
    from eval.family import FamilyEvalConfig, evaluate_family, loss_matrix, write_results
    from megatron_split.branching import branch_overrides, trunk_overrides
    from megatron_split.data.clusters import ClusterDataConfig
    from megatron_split.train.config import RunConfig
    from megatron_split.train.loop import Trainer
    from megatron_split.train_cli import setup_logging

    args = parse_args(argv)
    setup_logging(rank=0)
    out = Path(args.out)
    corpus = out / "corpus"

    stage(
        "corpus",
        corpus / "corpus.manifest.json",
        lambda: data_cli.main(
            ["corpus", "build", "--output", str(corpus), "--max-mb", str(args.max_mb),
             "--shards", "1"]
        ),
    )  # fmt: skip
    jsonl = sorted(str(p) for p in corpus.glob("*.jsonl"))
    clusters = prepare_clusters(
        out, jsonl, args.vocab_size, "source", args.embedder, ["--k", str(args.k)]
    )

    cluster_data = ClusterDataConfig(str(clusters)).build()
    trunk = load_config(
        RunConfig, args.config, [*trunk_overrides(cluster_data, out / "trunk"), *args.overrides]
    )
    log.info("[trunk] pretraining on %d clusters: %s", cluster_data.k, trunk.run_dir)
    Trainer(trunk).run()

    branches = []
    for cluster in range(cluster_data.k):
        branch = load_config(
            RunConfig,
            args.config,
            [
                *args.overrides,  # first: what follows makes it a branch
                *branch_overrides(
                    cluster_data,
                    cluster,
                    parent=trunk.run_dir,
                    run_dir=out / "branches" / f"cluster_{cluster}",
                    steps=args.branch_steps,
                ),
            ],
        )
        log.info("[branch %d] continued pretraining: %s", cluster, branch.run_dir)
        Trainer(branch).run()
        branches.append(branch.run_dir)

    log.info("[eval] every model on every cluster's held-out documents")
    rows = evaluate_family(
        FamilyEvalConfig(
            clusters=str(clusters),
            trunk=trunk.run_dir,
            branches=branches,
            out=str(out / "eval"),
            heldout_samples=trunk.train.eval_batches * trunk.train.global_batch,
        )
    )
    write_results(rows, out / "eval", cluster_data.k)
    _, losses = loss_matrix(rows, cluster_data.k)
    summary = {
        "k": cluster_data.k,
        "clusters": [
            {"cluster": c, "trunk": float(losses[0, c]), "specialist": float(losses[1 + c, c])}
            for c in range(cluster_data.k)
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nheld-out loss per cluster (lower is better)")
    print(f"{'cluster':>7}  {'trunk':>7}  {'specialist':>10}  {'change':>7}")
    for row in summary["clusters"]:
        trunk_loss, specialist = row["trunk"], row["specialist"]
        change = specialist - trunk_loss
        print(f"{row['cluster']:>7}  {trunk_loss:>7.3f}  {specialist:>10.3f}  {change:>+7.3f}")
    print(f"\nwritten: {out / 'summary.json'}, {out / 'eval'}/, runs under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
