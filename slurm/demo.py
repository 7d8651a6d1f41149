"""`msplit demo`: split model training end to end on this machine, from registry packages.

Runs the experiment graph of configs/demo.yaml with the local executor: corpus ->
tokenizer -> shards -> embeddings -> clusters -> trunk -> the k branches and the standard
arm -> evaluation -> report. Every node is skipped when its output is complete, so a rerun
resumes where it stopped (and is a no-op once everything is done). It ends with the report:
each cluster's held-out loss under the trunk, the standard arm and its specialist, at equal
compute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1]
        + "\nExtra dotted.key=value arguments override the experiment file, e.g. data.k=8 "
        "branches.tokens=163840 'overrides=[optim.lr=1e-3]' (every run).",
    )
    parser.add_argument("--out", default="runs/demo", help="where every node writes")
    parser.add_argument(
        "--experiment", default=str(REPO_CONFIGS / "demo.yaml"), help="the experiment file"
    )
    parser.add_argument("overrides", nargs="*", help="dotted.key=value of the experiment")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from slurm import cli

    args = parse_args(argv)
    code = cli.main(["run", args.experiment, f"out={args.out}", *args.overrides])
    report = Path(args.out) / "report.md"
    if code == 0 and report.is_file():
        print("\n" + report.read_text())
    return code


if __name__ == "__main__":
    sys.exit(main())
