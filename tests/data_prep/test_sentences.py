from __future__ import annotations

import pytest

from data_prep.sentences import (
    SentenceSplitter,
    SentenceSplitterConfig,
    languages,
    punkt_parameters,
)


@pytest.fixture(scope="module")
def english():
    return SentenceSplitterConfig("english").build()


def test_abbreviations_do_not_end_sentences(english) -> None:
    text = (
        "Mr. Smith flew to Washington, D.C. on Jan. 5 at 3 p.m. with Dr. Jones. "
        "The U.S. team won. Then they left."
    )
    assert english.split(text) == [
        "Mr. Smith flew to Washington, D.C. on Jan. 5 at 3 p.m. with Dr. Jones.",
        " The U.S. team won.",
        " Then they left.",
    ]


@pytest.mark.parametrize(
    "text", ["", "   ", "no end", "One. Two!\n\nThree?  Four.\n", "  Leading. Trailing.  "]
)
def test_splitting_loses_no_character(english, text: str) -> None:
    pieces = english.split(text)
    assert "".join(pieces) == text and len(pieces) >= 1


def test_other_languages_and_unknown_language() -> None:
    assert {"english", "german", "french", "spanish"} <= set(languages())
    german = SentenceSplitterConfig("german").build()
    assert german.split("Das ist z.B. ein Satz. Und noch einer.") == [
        "Das ist z.B. ein Satz.",
        " Und noch einer.",
    ]
    assert "dr" in punkt_parameters("english").abbrev_types
    with pytest.raises(ValueError, match="no punkt parameters for language 'klingon'"):
        SentenceSplitterConfig("klingon").build()


@pytest.fixture(scope="module")
def keep_newlines() -> SentenceSplitter:
    return SentenceSplitterConfig("english", keep_newlines=True).build()


LINES = "First sentence.\nMr. Smith met Dr. Jones.\n\nVery bad acting!!!\n\tThird one here."


def test_keep_newlines_ends_each_sentence_with_the_whitespace_after_it(
    keep_newlines: SentenceSplitter,
) -> None:
    """The sentences of Megatron-LM's --keep-newlines splitter (with nltk 3.10): between
    sentences ending in . ! or ?, no character is lost."""
    sentences = keep_newlines.split(LINES)
    assert sentences == [
        "First sentence.\n",
        "Mr. Smith met Dr. Jones.\n\n",
        "Very bad acting!!!\n\t",
        "Third one here.",
    ]
    assert "".join(sentences) == LINES


def test_without_keep_newlines_the_whitespace_leads_the_next_sentence(
    english: SentenceSplitter,
) -> None:
    sentences = english.split(LINES)
    assert sentences == [
        "First sentence.",
        "\nMr. Smith met Dr. Jones.",
        "\n\nVery bad acting!!!",
        "\n\tThird one here.",
    ]
    assert "".join(sentences) == LINES


@pytest.mark.parametrize(
    ("language", "text", "sentences"),
    [("english", "  One. Two.\n\n", ["  One. ", "Two."]),  # the text's trailing whitespace goes
     ("english", 'He said "Hi."\nThen (he left.)\n\nThe end.',  # and that after a closing mark
      ['He said "Hi."', "Then (he left.)", "The end."]),
     ("german", "Das ist z.B. ein Satz.\nUnd noch einer.",
      ["Das ist z.B. ein Satz.\n", "Und noch einer."]),
     # whitespace alone (never a document: bad input) is one piece, as without keep_newlines
     ("english", "   ", ["   "]), ("english", "", [""])],
)  # fmt: skip
def test_keep_newlines_drops_what_megatron_lm_drops(
    language: str, text: str, sentences: list[str]
) -> None:
    assert SentenceSplitterConfig(language, keep_newlines=True).build().split(text) == sentences
