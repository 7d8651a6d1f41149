"""Train a byte-level BPE tokenizer (HF `tokenizers`) on a corpus the readers understand."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_prep import atomic
from data_prep.readers import BadRecord, ReaderConfig, expand_inputs, read_unit

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
    progress: bool = True

    def build(self) -> BPETrainer:
        return BPETrainer(self)


class BPETrainer:
    def __init__(self, config: TrainTokenizerConfig):
        self.config = config
        self.skipped: Counter[str] = Counter()

    def texts(self) -> Iterator[str]:
        """Training texts in input order; bad records are counted, not used."""
        reader_config = ReaderConfig(json_keys=(self.config.json_key,))
        budget = None if self.config.max_mb is None else int(self.config.max_mb * (1 << 20))
        for unit in expand_inputs(self.config.inputs):
            for record in read_unit(unit, reader_config):
                if isinstance(record, BadRecord):
                    self.skipped[record.reason] += 1
                    continue
                if budget is not None:
                    if budget <= 0:
                        return
                    budget -= record.n_bytes
                yield record.texts[0]

    def train(self) -> Path:
        """Train and write tokenizer.json atomically; returns its path."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        config = self.config
        out = Path(config.output)
        if out.is_dir() or not out.suffix:
            out = out / "tokenizer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=[EOD_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=config.progress,
        )
        tokenizer.train_from_iterator(self.texts(), trainer=trainer)
        temp = atomic.temp_path(out)
        tokenizer.save(str(temp))
        atomic.publish(temp, out)
        if self.skipped:
            counts = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items()))
            print(f"train-tokenizer: skipped records: {counts}", file=sys.stderr)
        return out
