from __future__ import annotations

import pytest

from data_prep.sentences import SentenceSplitterConfig, languages, punkt_parameters


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
