"""`msplit data embed`: one embedding per document of a set of shards, resumable.

Output directory ``OUT``:
- ``embeddings.npy``: (documents, dim) float16/float32, rows in the shards' global order
  (see :mod:`data_prep.doc_texts`), every row of unit L2 norm (before float16 rounding);
- ``embedder/``: the embedder's fitted state (TF-IDF), so routing reloads the same map;
- ``embeddings.manifest.json``, written last: embedder (name, version, hash, dim), shards,
  settings, fingerprint.

Rows are computed in chunks and written into ``embeddings.npy.partial`` (a memmap); after
each chunk ``embeddings.progress.json`` records how many rows are done, so a killed run
resumes at the last finished chunk. Re-running a finished job with the same inputs and
settings is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep.doc_texts import ShardDocuments
from data_prep.embedders import DEFAULT_MAX_TOKENS, EmbedderConfig, load_embedder

EMBEDDINGS_FORMAT = "megatron-split/embeddings/v1"
EMBEDDINGS_FILE = "embeddings.npy"
MANIFEST_FILE = "embeddings.manifest.json"
PROGRESS_FILE = "embeddings.progress.json"
EMBEDDER_DIR = "embedder"
DTYPES = ("float16", "float32")


class EmbeddingsError(ValueError):
    """Embeddings that are missing, unfinished, or do not match their shards."""


@dataclass
class EmbedConfig:
    shards: list[str]
    output: str
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    # Shard tokens of each document that are decoded and embedded (None: the embedder's
    # DEFAULT_MAX_TOKENS).
    max_tokens: int | None = None
    chunk_docs: int = 8192  # rows per resumable chunk
    dtype: str = "float16"
    fit_docs: int = 20_000  # documents the TF-IDF embedder is fitted on
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens is None:
            self.max_tokens = DEFAULT_MAX_TOKENS[self.embedder.name]
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.max_tokens < 1 or self.chunk_docs < 1 or self.fit_docs < 1:
            raise ValueError("max_tokens, chunk_docs and fit_docs must be >= 1")

    def build(self) -> EmbedRun:
        return EmbedRun(self)


class EmbedRun:
    def __init__(self, config: EmbedConfig):
        self.config = config
        self.out = Path(config.output)

    def run(self) -> dict[str, Any]:
        config = self.config
        documents = ShardDocuments(config.shards, config.max_tokens)
        self.out.mkdir(parents=True, exist_ok=True)
        settings = {
            k: v
            for k, v in asdict(config).items()
            if k in ("max_tokens", "dtype", "fit_docs", "seed")
        }
        embedder_settings = asdict(config.embedder)
        settings["embedder"] = {k: embedder_settings[k] for k in ("name", "tfidf")}
        base = _digest([settings, documents.identity()])
        done = _read_json(self.out / MANIFEST_FILE)
        if done is not None and done.get("fingerprint", {}).get("inputs") == base:
            _log(f"embeddings up to date: {self.out / EMBEDDINGS_FILE}")
            return done

        embedder = self._embedder(documents, base)
        fingerprint = {"inputs": base, "embedder": embedder.hash}
        n, dim = len(documents), embedder.dim
        partial = self.out / f"{EMBEDDINGS_FILE}.partial"
        start = self._resume_point(fingerprint, partial, (n, dim))
        if start == 0:
            rows = np.lib.format.open_memmap(partial, mode="w+", dtype=config.dtype, shape=(n, dim))
        else:
            rows = np.load(partial, mmap_mode="r+")
            _log(f"resuming at document {start:,} of {n:,}")
        started = time.perf_counter()
        self._fill(rows, documents, embedder, start, fingerprint)
        seconds = time.perf_counter() - started
        del rows
        atomic.publish(partial, self.out / EMBEDDINGS_FILE)
        manifest = {
            "format": EMBEDDINGS_FORMAT,
            "file": EMBEDDINGS_FILE,
            "documents": n,
            "dim": dim,
            "dtype": config.dtype,
            "embedder": {**embedder.info(), "state": EMBEDDER_DIR},
            "shards": documents.identity(),
            "settings": settings,
            "fingerprint": fingerprint,
            "device": getattr(embedder, "device", "cpu"),
            "seconds": round(seconds, 3),
            "docs_per_s": round((n - start) / max(seconds, 1e-9), 1),
        }
        atomic.write_json(self.out / MANIFEST_FILE, manifest)
        (self.out / PROGRESS_FILE).unlink(missing_ok=True)
        return manifest

    def _embedder(self, documents: ShardDocuments, base: str) -> Any:
        """The embedder, fitted (TF-IDF) on a seeded sample or reloaded from a resumed run."""
        config = self.config
        state = self.out / EMBEDDER_DIR
        progress = _read_json(self.out / PROGRESS_FILE)
        if progress and progress["fingerprint"]["inputs"] == base:
            return load_embedder(progress["embedder"], state, config.embedder.device)
        embedder = config.embedder.build()
        if embedder.needs_fit:
            rng = np.random.default_rng(config.seed)
            sample = np.sort(
                rng.choice(len(documents), min(config.fit_docs, len(documents)), replace=False)
            )
            _log(f"fitting {embedder.name} on {len(sample):,} documents")
            embedder.fit(documents.texts(sample))
            embedder.save(state)
        return embedder

    def _resume_point(self, fingerprint: dict[str, str], partial: Path, shape: tuple) -> int:
        progress = _read_json(self.out / PROGRESS_FILE)
        if not progress or progress["fingerprint"] != fingerprint or not partial.is_file():
            return 0
        existing = np.load(partial, mmap_mode="r")
        if existing.shape != shape or existing.dtype != np.dtype(self.config.dtype):
            return 0
        return int(progress["done"])

    def _fill(
        self,
        rows: np.ndarray,
        documents: ShardDocuments,
        embedder: Any,
        start: int,
        fingerprint: dict[str, str],
    ) -> None:
        from data_prep.progress import progress_bar

        n, chunk = len(documents), self.config.chunk_docs
        bar = progress_bar(
            total=n,
            initial=start,
            unit="doc",
            desc=f"embed ({embedder.name})",
            disable=not self.config.progress,
            mininterval=0.5,
        )
        with bar:
            for first in range(start, n, chunk):
                last = min(first + chunk, n)
                rows[first:last] = embedder.embed(documents.texts(range(first, last)))
                rows.flush()
                atomic.write_json(
                    self.out / PROGRESS_FILE,
                    {
                        "fingerprint": fingerprint,
                        "done": last,
                        "embedder": {**embedder.info(), "state": EMBEDDER_DIR},
                    },
                )
                bar.update(last - first)


# ------------------------------------------------------------------ reading


@dataclass
class Embeddings:
    """A finished embeddings directory: its manifest and a read-only memmap of its rows."""

    directory: Path
    manifest: dict[str, Any]
    rows: np.ndarray

    @property
    def embedder_info(self) -> dict[str, Any]:
        return self.manifest["embedder"]

    @property
    def state_dir(self) -> Path:
        return self.directory / self.manifest["embedder"]["state"]

    @property
    def shard_prefixes(self) -> list[str]:
        return [s["prefix"] for s in self.manifest["shards"]]

    def check_shards(self, documents: ShardDocuments) -> None:
        """Refuse shards other than (or changed since) the ones embedded."""
        recorded, actual = self.manifest["shards"], documents.identity()
        if len(recorded) != len(actual):
            raise EmbeddingsError(
                f"{self.directory}: embeddings cover {len(recorded)} shards, {len(actual)} given"
            )
        for was, now in zip(recorded, actual, strict=True):
            for key in ("documents", "fingerprint"):
                if was[key] != now[key]:
                    raise EmbeddingsError(
                        f"{self.directory / MANIFEST_FILE}: shard {now['prefix']} field {key!r} "
                        f"is {now[key]!r}, the embeddings were made from {was[key]!r}: re-run "
                        "`msplit data embed`"
                    )
        if len(self.rows) != len(documents):
            raise EmbeddingsError(
                f"{self.directory / EMBEDDINGS_FILE}: {len(self.rows):,} rows for "
                f"{len(documents):,} documents in the shards"
            )


def open_embeddings(directory: str | Path) -> Embeddings:
    """Open a finished embeddings directory, checking its rows against its manifest."""
    directory = Path(directory)
    manifest = _read_json(directory / MANIFEST_FILE)
    if manifest is None:
        raise EmbeddingsError(
            f"{directory / MANIFEST_FILE} is missing: `msplit data embed` did not finish there"
        )
    if manifest.get("format") != EMBEDDINGS_FORMAT:
        raise EmbeddingsError(f"{directory / MANIFEST_FILE}: format is {manifest.get('format')!r}")
    path = directory / manifest["file"]
    try:
        rows = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise EmbeddingsError(f"{path}: cannot read ({error})") from error
    expected = (manifest["documents"], manifest["dim"])
    if rows.ndim != 2 or rows.shape != expected:
        raise EmbeddingsError(
            f"{path}: shape {rows.shape}, manifest field 'documents'/'dim' says {expected}"
        )
    if rows.shape[1] != manifest["embedder"]["dim"]:
        raise EmbeddingsError(
            f"{path}: dimension {rows.shape[1]} but embedder {manifest['embedder']['name']} "
            f"has dimension {manifest['embedder']['dim']}"
        )
    return Embeddings(directory, manifest, rows)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _log(message: str) -> None:
    print(message, file=sys.stderr)
