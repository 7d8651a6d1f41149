"""Phonebooks: two books of unique facts, an exact overlap, every fact repeated, deterministic."""

import json
import os
import subprocess
import sys

import pytest

from data_prep.phonebook import PhonebookConfig, write_phonebook


def test_books_hold_their_facts_with_the_asked_overlap(tmp_path):
    paths = write_phonebook(PhonebookConfig(str(tmp_path), entries=20, overlap=0.25, repeats=3))
    facts = json.loads(paths["facts"].read_text())["facts"]
    in_a = {f["name"] for f in facts if "a" in f["books"]}
    in_b = {f["name"] for f in facts if "b" in f["books"]}
    assert len(in_a) == len(in_b) == 20 and len(in_a & in_b) == 5
    assert len({f["number"] for f in facts}) == len(facts)  # a number names one fact
    for book, names in (("a", in_a), ("b", in_b)):
        docs = [json.loads(x) for x in paths[f"book_{book}"].read_text().splitlines()]
        assert {d["book"] for d in docs} == {book}
        lines = [line for d in docs for line in d["text"].split("\n")]
        assert len(lines) == 3 * 20  # every fact in `repeats` documents
        assert {line.split(":")[0] for line in lines} == names


def test_the_same_seed_writes_the_same_books_in_any_process(tmp_path):
    program = (
        "import sys; from data_prep.phonebook import PhonebookConfig, write_phonebook; "
        "write_phonebook(PhonebookConfig(sys.argv[1], entries=30, overlap=0.5))"
    )
    for hash_seed, out in (("1", tmp_path / "x"), ("2", tmp_path / "y")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", program, str(out)], env=env, check=True)
    for name in ("book_a.jsonl", "book_b.jsonl", "facts.json"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="overlap must be in"):
        PhonebookConfig(str(tmp_path), overlap=1.5)
