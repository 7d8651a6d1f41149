"""`msplit branch`: continue a trunk checkpoint on one cluster (a branch of the split family).

    msplit branch configs/tiny.yaml --clusters runs/demo/clusters --cluster 2 \\
        --from runs/demo/trunk --steps 400 --run-dir runs/branch_2 [dotted.key=value ...]
    msplit branch configs/tiny.yaml --clusters DIR --cluster 0 --from hf:HF_MODEL ...

The run is `msplit train` with the overrides that make a branch (see
megatron_split/branching.py): weights from ``--from`` (a run, its checkpoints/ or one step
directory), the cluster's data with the same held-out split as the trunk's, a fresh
optimizer and LR schedule, lineage recorded, and the trunk's loss on the cluster logged as
step 0. Extra overrides come first, so they cannot undo what makes the run a branch. Runs
under torchrun or Slurm like `msplit train`; restarting it resumes the branch.

``--from hf:HF_MODEL`` branches a released model (a Hugging Face directory or GGUF file):
it is imported once under ``RUN_DIR/parent`` (``msplit import-hf``) and the branch takes
its architecture; the clusters must be tokenized with its tokenizer
(``--tokenizer hf:HF_MODEL``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

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
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    from megatron_split.branching import branch_overrides

    args = parse_args(argv)
    parent, released = args.parent, []
    if parent.startswith("hf:"):
        parent = imported(parent.removeprefix("hf:"), Path(args.run_dir) / "parent")
        if parent is None:
            return 2
        released = ["init.model_from_parent=true", "init.load_optimizer=false"]
    branch = branch_overrides(args.clusters, args.cluster, parent, args.run_dir, args.steps)
    warmup = f"optim.schedule.warmup_steps={max(1, args.steps // 10)}"  # the overrides may set it
    return train_cli.main([args.config, warmup, *args.overrides, *branch, *released])


def imported(source: str, target: Path) -> Path | None:
    """The released model ``source`` as a checkpoint under ``target``, imported by rank 0
    (the other ranks wait for it) unless it already is; None if the import failed."""
    from megatron_split.checkpoint import latest_checkpoint

    root = target / "checkpoints"
    if latest_checkpoint(root) is None:
        if int(os.environ.get("RANK", "0")) == 0:
            argv = [sys.executable, "-m", "megatron_split.cli", "import-hf", source, str(target)]
            if subprocess.run(argv).returncode != 0:
                return None
        while latest_checkpoint(root) is None:  # rank 0 imports (torchrun stops all if it fails)
            time.sleep(1)
    return target


if __name__ == "__main__":
    sys.exit(main())
