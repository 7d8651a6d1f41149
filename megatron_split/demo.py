"""`msplit demo`: the embedded end-to-end example, on this machine, from registry packages.

Stages (each skipped when its output is already complete, so a rerun resumes):
  1. corpus      a labelled multi-domain JSONL slice built from installed packages
  2. tokenizer   a byte-level BPE trained on it
  3. shards      Megatron indexed shards + document table
  4. trunk       a tiny GPT trained on the mixture (configs/tiny.yaml), with checkpoints
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from megatron_split.config import load_config

log = logging.getLogger("msplit.demo")
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msplit demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo", help="where every stage writes")
    parser.add_argument("--max-mb", type=float, default=3.0, help="corpus size (all sources)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--config", default=str(REPO_CONFIGS / "tiny.yaml"), help="trunk config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for the trunk config")
    return parser.parse_args(argv)


def stage(name: str, done: Path, run: Callable[[], int]) -> None:
    if done.exists():
        log.info("[%s] done already (%s)", name, done)
        return
    log.info("[%s] running", name)
    code = run()
    if code:
        raise SystemExit(f"msplit demo: stage {name} failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    from data_prep import cli as data_cli
    from megatron_split.train.config import RunConfig
    from megatron_split.train.loop import Trainer
    from megatron_split.train_cli import setup_logging

    args = parse_args(argv)
    setup_logging(rank=0)
    out = Path(args.out)
    corpus, tokenizer, shards = out / "corpus", out / "tokenizer.json", out / "shards" / "corpus"

    stage(
        "corpus",
        corpus / "corpus.manifest.json",
        lambda: data_cli.main(
            [
                "corpus",
                "build",
                "--output",
                str(corpus),
                "--max-mb",
                str(args.max_mb),
                "--shards",
                "1",
            ]
        ),
    )
    jsonl = sorted(str(p) for p in corpus.glob("*.jsonl"))
    stage(
        "tokenizer",
        tokenizer,
        lambda: data_cli.main(
            [
                "train-tokenizer",
                "--input",
                *jsonl,
                "--output",
                str(tokenizer),
                "--vocab-size",
                str(args.vocab_size),
            ]
        ),
    )
    stage(
        "shards",
        Path(f"{shards}.manifest.json"),
        lambda: data_cli.main(
            [
                "tokenize",
                "--input",
                *jsonl,
                "--output-prefix",
                str(shards),
                "--tokenizer",
                f"hf:{tokenizer}",
                "--append-eod",
                "--label-key",
                "source",
                "--workers",
                "2",
            ]
        ),
    )
    cfg = load_config(
        RunConfig,
        args.config,
        [f"run_dir={out / 'trunk'}", f"data.paths=[{shards}]", *args.overrides],
    )
    log.info("[trunk] training %s", cfg.run_dir)
    result = Trainer(cfg).run()
    log.info("[trunk] %s at step %d, loss %.3f", result["status"], result["step"], result["loss"])
    log.info("metrics: %s/metrics.jsonl, checkpoints: %s/checkpoints", cfg.run_dir, cfg.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
