"""`msplit experiment`: submit a split experiment to Slurm as one graph of jobs, and follow it.

    msplit experiment submit EXPERIMENT.yaml [dotted.key=value ...] [--wait]
    msplit experiment status EXPERIMENT.yaml [dotted.key=value ...]

See slurm/experiment.py (and configs/experiment_tiny.yaml) for the file's fields.
"""

from __future__ import annotations

import argparse
import logging
import sys

from megatron_split.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit experiment",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("action", choices=["submit", "status"])
    parser.add_argument("experiment", help="experiment YAML")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the file")
    parser.add_argument("--wait", action="store_true", help="submit, then wait for every job")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from slurm.experiment import ExperimentConfig, status, submit

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ExperimentConfig, args.experiment, args.overrides)
        if args.action == "submit":
            ids = submit(cfg, wait=args.wait)
            if not ids:
                print("nothing to submit: every job is complete")
            for name, job_id in ids.items():
                print(f"{name:<28} {job_id}")
            return 0
        rows = status(cfg)
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        print(f"msplit experiment: {error}", file=sys.stderr)
        return 2
    print(f"{'job':<28} {'done':<5} {'slurm id':<10} {'state':<18} progress")
    for row in rows:
        print(f"{row['job']:<28} {row['done']:<5} {row['slurm_id']:<10} {row['state']:<18} "
              f"{row['progress']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
