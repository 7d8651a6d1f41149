"""`msplit branch`: continue a trunk checkpoint on one cluster (a branch of the split family).

    msplit branch configs/tiny.yaml --clusters runs/demo/clusters --cluster 2 \\
        --from runs/demo/trunk --steps 400 --run-dir runs/branch_2 [dotted.key=value ...]

The run is `msplit train` with the overrides that make a branch (see
megatron_split/branching.py): weights from ``--from`` (a run, its checkpoints/ or one step
directory), the cluster's data with the same held-out split as the trunk's, a fresh
optimizer and LR schedule, lineage recorded, and the trunk's loss on the cluster logged as
step 0. Extra overrides come first, so they cannot undo what makes the run a branch. Runs
under torchrun or Slurm like `msplit train`; restarting it resumes the branch.
"""

from __future__ import annotations

import argparse
import sys

from megatron_split import train_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit branch",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("config", help="YAML run config (the trunk's, usually)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    parser.add_argument("--clusters", required=True, help="cluster directory")
    parser.add_argument("--cluster", type=int, required=True, help="the cluster to specialise on")
    parser.add_argument("--from", dest="parent", required=True, help="the trunk checkpoint")
    parser.add_argument("--steps", type=int, required=True, help="continued-pretraining steps")
    parser.add_argument("--run-dir", required=True, help="the branch's run directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from megatron_split.branching import branch_overrides

    args = parse_args(argv)
    branch = branch_overrides(args.clusters, args.cluster, args.parent, args.run_dir, args.steps)
    warmup = f"optim.schedule.warmup_steps={max(1, args.steps // 10)}"  # the overrides may set it
    return train_cli.main([args.config, warmup, *args.overrides, *branch])


if __name__ == "__main__":
    sys.exit(main())
