"""`msplit train CONFIG.yaml [dotted.key=value ...]`: one training run.

Single process: ``msplit train configs/tiny.yaml``. Several processes on one node:
``torchrun --nproc-per-node 4 -m megatron_split.train_cli configs/tiny.yaml parallel.tensor=2``.
Under Slurm each task reads its rank from the Slurm environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from megatron_split.checkpoint import step_dir_name
from megatron_split.config import ConfigError, load_config, to_dict
from megatron_split.runtime import detect_launch_env
from megatron_split.train.config import RunConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit train",
        description="Train a GPT model on Megatron indexed shards (a trunk, or any run).",
        epilog="Example: msplit train configs/tiny.yaml optim.lr=3e-4 train.steps=200",
    )
    parser.add_argument("config", nargs="?", help="YAML run config (omit to use only overrides)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config")
    return parser.parse_intermixed_args(argv)  # overrides may follow the options


def setup_logging(rank: int, every_rank: bool = False) -> None:
    """INFO records from rank 0 (or from ``every_rank``), warnings from the others."""
    logging.basicConfig(
        level=logging.INFO if rank == 0 or every_rank else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # megatron.core logs every index it builds or loads at INFO, and faiss's loader each
    # CPU build it tries ("Could not load library ..." before the one that loads): warnings
    # only from both.
    for name in ("megatron.core", "faiss.loader"):
        logging.getLogger(name).setLevel(logging.WARNING)


def outcome(result: dict[str, Any], cfg: RunConfig) -> str | None:
    """One line on a run that ended short of training to its end, or None."""
    step = result["step"]
    saved = Path(cfg.run_dir) / "checkpoints" / step_dir_name(step)
    if result["status"] in ("interrupted", "preempted"):
        return f"{result['status']} at step {step}: saved {saved}; a rerun resumes from it"
    if result["status"] == "stopped_at_step":
        return (
            f"stopped at train.stop_at_step={step} of train.steps={cfg.train.steps}: saved "
            f"{saved}; the next segment resumes from it"
        )
    if result["status"] == "already_complete":
        where = "complete" if step >= cfg.train.steps else "past train.stop_at_step"
        return f"run {cfg.run_dir} is already {where} at step {step}: nothing to train"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = args.config
    overrides = list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        overrides.insert(0, config)
        config = None
    env = detect_launch_env()
    setup_logging(env.rank)
    try:
        cfg = load_config(RunConfig, config, overrides)
        cfg.validate(world_size=env.world_size)
    except ConfigError as e:
        print(f"msplit train: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0

    from megatron_split.runtime import destroy_distributed
    from megatron_split.train.loop import Trainer

    try:
        result = Trainer(cfg).run()
    except ConfigError as e:
        print(f"msplit train: config error: {e}", file=sys.stderr)
        return 2
    finally:
        destroy_distributed()
    if env.rank == 0:
        log = logging.getLogger("msplit")
        log.info("run %s: %s", cfg.run_dir, json.dumps(result))
        if line := outcome(result, cfg):
            log.info("%s", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
