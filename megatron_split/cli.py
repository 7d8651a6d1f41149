"""`msplit`: one command line for every stage of split model training.

Each subcommand lives in the package that owns it and exposes ``main(argv) -> int``; this
module only dispatches, importing lazily so that ``msplit --help`` stays instant.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

# subcommand -> (module with main(argv), one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("megatron_split.train_cli", "pretrain a trunk (or any GPT run) from a YAML config"),
    "branch": ("megatron_split.branch_cli", "continue a trunk checkpoint on one cluster"),
    "data": ("data_prep.cli", "corpora, tokenizers, indexed shards, embeddings, clusters"),
    "experiment": ("slurm.cli", "plan, run or submit a split experiment: one graph to the law"),
    "eval": ("eval.cli", "held-out loss and routed zero-shot tasks of a trunk and its branches"),
    "export-hf": (
        "megatron_split.checkpoint.hf_export",
        "write a checkpoint as a Hugging Face model directory",
    ),
    "import-hf": (
        "megatron_split.checkpoint.hf_import",
        "a Hugging Face model (directory or GGUF) as a checkpoint to branch from",
    ),
    "lm-eval": (
        "eval.lm_eval_backend",
        "lm-evaluation-harness's command line, with the megatron_split model backend",
    ),
    "laws": ("laws.cli", "fit scaling laws L(N, D, D') and plan the compute split"),
    "phonebook": (
        "slurm.phonebook",
        "the synthetic facts experiment: recall against the split step",
    ),
    "demo": ("slurm.demo", "run the embedded end-to-end example on this machine"),
}


def _usage() -> str:
    lines = ["usage: msplit [--version] <command> [args...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `msplit <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv and argv[0] == "--version":
        print(f"msplit {importlib.metadata.version('megatron-split')}")
        return 0
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"msplit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
