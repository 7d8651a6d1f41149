"""Train a byte-level BPE tokenizer (HF `tokenizers`) on a corpus the readers understand."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_prep import atomic
from data_prep.readers import (
    ON_ERROR,
    ReaderConfig,
    check_some_documents,
    expand_inputs,
    read_documents,
)

EOD_TOKEN = "<|endoftext|>"


@dataclass
class TrainTokenizerConfig:
    """A byte-level BPE like GPT-2's, with `<|endoftext|>` as its only special token."""

    inputs: list[str]
    output: str  # tokenizer.json path (a directory gets tokenizer.json inside)
    vocab_size: int = 32000
    min_frequency: int = 2
    json_key: str = "text"
    max_mb: float | None = None  # train on at most this much text
    on_error: str = "stop"  # bad records: stop at the first, or skip and count them
    progress: bool = True

    def __post_init__(self) -> None:
        if self.vocab_size < 1 or self.min_frequency < 0:
            raise ValueError("vocab_size must be >= 1 and min_frequency >= 0")
        if self.max_mb is not None and self.max_mb <= 0:
            raise ValueError(f"max_mb must be positive, not {self.max_mb}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {self.on_error!r}")

    def build(self) -> BPETrainer:
        return BPETrainer(self)


class BPETrainer:
    def __init__(self, config: TrainTokenizerConfig):
        self.config = config
        self.skipped: Counter[str] = Counter()
        self.documents = 0

    def texts(self) -> Iterator[str]:
        """Training texts in input order; a bad record stops the run, or is counted
        (``on_error`` "skip"), as in `msplit data tokenize`."""
        config = self.config
        reader_config = ReaderConfig(json_keys=(config.json_key,))
        budget = None if config.max_mb is None else int(config.max_mb * (1 << 20))
        units = expand_inputs(config.inputs)
        for document in read_documents(units, reader_config, config.on_error, self.skipped):
            if budget is not None:
                if budget <= 0:
                    return
                budget -= document.n_bytes
            self.documents += 1
            yield document.texts[0]

    def train(self) -> Path:
        """Train and write tokenizer.json atomically; returns its path."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        config = self.config
        out = Path(config.output)
        if out.is_dir() or not out.suffix:
            out = out / "tokenizer.json"
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=[EOD_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            # its bar only on a terminal: piped, it leaves blank lines on stdout
            show_progress=config.progress and sys.stdout.isatty() and sys.stderr.isatty(),
        )
        tokenizer.train_from_iterator(self.texts(), trainer=trainer)
        check_some_documents(config.inputs, self.documents, self.skipped)
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = atomic.temp_path(out)
        tokenizer.save(str(temp))
        atomic.publish(temp, out)
        if self.skipped:
            counts = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items()))
            print(f"train-tokenizer: skipped records: {counts}", file=sys.stderr)
        return out
