"""Synthetic phonebooks: two clusters of random facts with a controlled overlap.

Book ``a`` and book ``b`` each hold ``entries`` facts "Firstname Lastname: 555-0123"; a
fraction ``overlap`` of book b's entries are also in book a (same name, same number). Each
book is written as JSONL documents of ``facts_per_doc`` facts, every fact appearing in
``repeats`` documents (each repeat a fresh shuffle), labelled with its book. ``facts.json``
lists every fact with the books that hold it, for measuring recall after training.

Names are drawn without replacement from syllable combinations and numbers are unique, so
a fact can only be recalled by memorising it. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.atomic import write_json

SYLLABLES = ("ka", "lo", "mi", "ra", "te", "su", "no", "vi", "da", "pe", "zu", "ri", "ba", "fo")


@dataclass
class PhonebookConfig:
    output: str
    entries: int = 100  # facts per book
    overlap: float = 0.0  # fraction of book b's facts that book a holds too
    repeats: int = 8  # documents each fact appears in
    facts_per_doc: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], not {self.overlap}")
        if self.entries < 1 or self.repeats < 1 or self.facts_per_doc < 1:
            raise ValueError("entries, repeats and facts_per_doc must be >= 1")


def fact_text(name: str, number: str) -> tuple[str, str]:
    """(prompt, answer) of a fact: the answer is what recall must produce."""
    return f"{name}:", f" {number}"


def write_phonebook(config: PhonebookConfig) -> dict[str, Path]:
    """Write book_a.jsonl, book_b.jsonl and facts.json; returns their paths."""
    rng = random.Random(config.seed)
    shared = round(config.overlap * config.entries)
    names = _names(rng, 2 * config.entries - shared)
    numbers = rng.sample(range(10**6), len(names))
    facts = [{"name": n, "number": f"{x // 10**4:02d}-{x % 10**4:04d}", "books": []}
             for n, x in zip(names, numbers, strict=True)]  # fmt: skip
    book_a = facts[: config.entries]
    book_b = facts[config.entries - shared : 2 * config.entries - shared]
    for book, members in (("a", book_a), ("b", book_b)):
        for fact in members:
            fact["books"].append(book)

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for book, members in (("a", book_a), ("b", book_b)):
        lines = []
        for repeat in range(config.repeats):
            order = rng.sample(members, len(members))
            for first in range(0, len(order), config.facts_per_doc):
                chunk = order[first : first + config.facts_per_doc]
                text = "\n".join("".join(fact_text(f["name"], f["number"])) for f in chunk)
                doc_id = f"{book}-{repeat}-{first // config.facts_per_doc}"
                lines.append(json.dumps({"id": doc_id, "text": text, "book": book}))
        paths[f"book_{book}"] = out / f"book_{book}.jsonl"
        paths[f"book_{book}"].write_text("\n".join(lines) + "\n")
    paths["facts"] = out / "facts.json"
    settings = {k: v for k, v in asdict(config).items() if k != "output"}
    write_json(paths["facts"], {"config": settings, "facts": facts})  # last: the books are done
    return paths


def _names(rng: random.Random, n: int) -> list[str]:
    def word() -> str:
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()

    seen: set[str] = set()
    while len(seen) < n:
        seen.add(f"{word()} {word()}")
    names = sorted(seen)  # a set's order differs between processes: sort, then shuffle
    rng.shuffle(names)
    return names
