"""Zero-shot multiple-choice tasks, read from local files in their released formats.

No benchmark data can be fetched at run time (clusters are often offline), so every task
reads the files its authors release, and builds the prompts lm-evaluation-harness uses, so
that numbers are comparable with its ``acc`` and ``acc_norm``:

======== ======================================================================
task     file
======== ======================================================================
arc      ARC-{Easy,Challenge}-{Train,Dev,Test}.jsonl (``question.stem/choices``,
         ``answerKey``), or the flattened hub export (``choices.text/label``)
hellaswag  hellaswag_{train,val}.jsonl (``ctx_a``, ``ctx_b``, ``endings``, ``label``)
piqa     {train,valid}.jsonl with ``{train,valid}-labels.lst`` beside it, or a ``label``
boolq    {train,dev}.jsonl (``passage``, ``question``, ``answer`` or ``label``)
winogrande {train_*,dev}.jsonl (``sentence`` with ``_``, ``option1/2``, ``answer``)
sciq     {train,valid,test}.json (a list) or .jsonl (``support``, ``question``,
         ``distractor1-3``, ``correct_answer``)
mmlu     a directory of ``*_test.csv`` (question, A, B, C, D, answer), one CSV, or a
         JSONL with ``question``, ``answer_a-d``, ``correct_answer``, ``topic``
bigbench a BIG-bench ``task.json`` with ``examples[].input/target_scores``
openbookqa {train,dev,test}.jsonl as released (``question.stem/choices``, ``answerKey``)
         or the hub's (``question_stem``, ``choices.text/label``); ``openbookqa_fact``
         reads the Additional files' ``fact1`` and puts it before the question
======== ======================================================================

``load_task("arc", PATH)`` returns a :class:`Task`; a malformed record stops with an error
naming the file, line and field. Header rows that some exports carry are skipped and
counted in ``Task.skipped``. A record of any format may carry a ``domain`` (MMLU's is its
subject unless it has one): the label that the oracle routes by (``msplit eval --oracle``).
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LETTERS = "ABCDEFGHIJ"


class TaskError(ValueError):
    """A task file that cannot be read, naming file, line and field."""


@dataclass(frozen=True)
class MCItem:
    id: str
    # (context, continuation) per choice: the continuation's log-likelihood given its
    # context is the choice's score (WinoGrande varies the context, the others the ending).
    choices: tuple[tuple[str, str], ...]
    gold: int
    query: str  # the text routed to a cluster: the question, without the choices
    # The item's domain where its file gives one (a ``domain`` field; MMLU: the subject):
    # the oracle routes it to the cluster holding most documents of that label.
    domain: str | None = None


@dataclass
class Task:
    name: str
    source: str
    items: list[MCItem]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Record:
    path: Path
    line: int | str  # a line number, or "element N" of a JSON list
    data: dict[str, Any]

    def get(self, key: str, kind: type | tuple[type, ...] = str) -> Any:
        if key not in self.data:
            raise TaskError(f"{self.path}:{self.line}: field {key!r} is missing")
        value = self.data[key]
        if not isinstance(value, kind):
            raise TaskError(
                f"{self.path}:{self.line}: field {key!r} is {type(value).__name__}, "
                f"expected {getattr(kind, '__name__', kind)}"
            )
        return value

    def fail(self, reason: str) -> TaskError:
        return TaskError(f"{self.path}:{self.line}: {reason}")

    @property
    def id(self) -> str:
        return str(self.data.get("id", f"{self.path.name}:{self.line}"))

    def item(
        self, choices: tuple[tuple[str, str], ...], gold: int, query: str, domain: str | None = None
    ) -> MCItem:
        """This record's item; its domain is the record's ``domain`` field, else ``domain``."""
        label = self.data.get("domain", domain)
        return MCItem(self.id, choices, gold, query, None if label is None else str(label))


# ---------------------------------------------------------------- file readers


def _read_jsonl(path: Path) -> Iterator[_Record]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(data, dict):
                raise TaskError(f"{path}:{number}: expected a JSON object")
            yield _Record(path, number, data)


def _read_json_or_jsonl(path: Path) -> Iterator[_Record]:
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        yield from _read_jsonl(path)
        return
    try:
        elements = json.loads(text)
    except json.JSONDecodeError as error:
        raise TaskError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    for number, data in enumerate(elements, start=1):
        where = f"element {number}"
        if not isinstance(data, dict):
            raise TaskError(f"{path}:{where}: expected a JSON object")
        yield _Record(path, where, data)


# ---------------------------------------------------------------- tasks


def _question_and_choices(record: _Record, flat_stem: str) -> tuple[str, list[str], int]:
    """(stem, choice texts, gold index) of an AI2-format record: ``question.stem`` and
    ``question.choices`` as released, or the hub's flattened ``flat_stem`` and
    ``choices.text/label``; ``answerKey`` names the gold label."""
    question = record.data.get("question")
    if isinstance(question, dict):  # the AI2 release
        inner = _Record(record.path, record.line, question)
        stem = inner.get("stem")
        choices = [_Record(record.path, record.line, c) for c in inner.get("choices", list)]
        texts, labels = [c.get("text") for c in choices], [c.get("label") for c in choices]
    else:  # the flattened hub export
        choices = _Record(record.path, record.line, record.get("choices", dict))
        stem, texts, labels = (
            record.get(flat_stem),
            choices.get("text", list),
            choices.get("label", list),
        )
    key = record.get("answerKey").strip()
    if key not in labels:
        raise record.fail(f"answerKey {key!r} is not one of the labels {labels}")
    return stem, texts, labels.index(key)


def _arc(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    for record in _read_jsonl(path):
        stem, texts, gold = _question_and_choices(record, "question")
        context = f"Question: {stem}\nAnswer:"
        yield record.item(tuple((context, f" {t}") for t in texts), gold, stem)


def _openbookqa(path: Path, skipped: dict[str, int], with_fact: bool = False) -> Iterator[MCItem]:
    """lm-eval's prompt: the bare question stem, each choice after a space. ``with_fact``:
    the record's ``fact1`` (the release's Additional files, the hub's "additional" config)
    before the stem, the open-book setting."""
    for record in _read_jsonl(path):
        stem, texts, gold = _question_and_choices(record, "question_stem")
        context = f"{record.get('fact1')}\n{stem}" if with_fact else stem
        yield record.item(tuple((context, f" {t}") for t in texts), gold, stem)


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    for record in _read_jsonl(path):
        ctx = record.get("ctx_a") + " " + record.get("ctx_b").capitalize()
        query = _hellaswag_clean(record.get("activity_label") + ": " + ctx)
        endings = record.get("endings", list)
        label = int(record.get("label", (int, str)))
        yield record.item(
            tuple((query, " " + _hellaswag_clean(e)) for e in endings),
            _check_gold(record, label, len(endings)),
            query,
        )


def _piqa(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    labels_file = path.with_name(path.stem + "-labels.lst")
    labels = labels_file.read_text().split() if labels_file.is_file() else None
    for index, record in enumerate(_read_jsonl(path)):
        if labels is not None:
            if index >= len(labels):
                raise record.fail(f"no label for this line in {labels_file}")
            label = int(labels[index])
        else:
            label = int(record.get("label", (int, str)))
        goal = record.get("goal")
        context = f"Question: {goal}\nAnswer:"
        solutions = (record.get("sol1"), record.get("sol2"))
        choices = tuple((context, f" {s}") for s in solutions)
        yield record.item(choices, _check_gold(record, label, 2), goal)


def _boolq(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    for record in _read_jsonl(path):
        answer = record.data.get("answer", record.data.get("label"))
        if not isinstance(answer, (bool, int)):
            raise record.fail("field 'answer' (or 'label') is missing or not a boolean")
        question = record.get("question")
        context = f"{record.get('passage')}\nQuestion: {question}?\nAnswer:"
        yield record.item(((context, " no"), (context, " yes")), int(bool(answer)), question)


def _winogrande(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    for record in _read_jsonl(path):
        sentence = record.get("sentence")
        blank = sentence.find("_")
        if blank < 0:
            raise record.fail("field 'sentence' has no '_' blank")
        # lm-eval's partial scoring: the option fills the blank in the context, and the
        # rest of the sentence is the continuation scored under each.
        continuation = " " + sentence[blank + 1 :].strip()
        options = (record.get("option1"), record.get("option2"))
        answer = str(record.get("answer", (int, str)))
        if answer not in ("1", "2"):
            raise record.fail(f"field 'answer' is {answer!r}, expected '1' or '2'")
        choices = tuple((sentence[:blank] + option, continuation) for option in options)
        yield record.item(choices, int(answer) - 1, sentence)


def _sciq(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    for record in _read_json_or_jsonl(path):
        question = record.get("question")
        context = f"{record.get('support').strip()}\nQuestion: {question}\nAnswer:".lstrip()
        answers = [record.get(f"distractor{i}") for i in (1, 2, 3)] + [record.get("correct_answer")]
        yield record.item(tuple((context, f" {a}") for a in answers), 3, question)


def _mmlu_item(
    record: _Record, question: str, options: list[str], answer: str, subject: str
) -> MCItem:
    if answer not in LETTERS[: len(options)]:
        raise record.fail(f"answer {answer!r} is not one of {LETTERS[: len(options)]}")
    listed = "".join(f"\n{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options))
    context = (
        f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        f"{question.strip()}{listed}\nAnswer:"
    )
    choices = tuple((context, f" {LETTERS[i]}") for i in range(len(options)))
    return record.item(choices, LETTERS.index(answer), question, subject)


def _mmlu(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    if path.suffix == ".jsonl":
        for record in _read_jsonl(path):
            if record.data.get("question") == "question" and record.data.get("topic"):
                skipped["header row"] = skipped.get("header row", 0) + 1
                continue
            options = [record.get(f"answer_{x}") for x in "abcd"]
            yield _mmlu_item(
                record,
                record.get("question"),
                options,
                record.get("correct_answer"),
                record.get("topic"),
            )
        return
    files = sorted(path.glob("*_test.csv")) if path.is_dir() else [path]
    if not files:
        raise TaskError(f"{path}: no *_test.csv files (the MMLU release's data/test/)")
    for file in files:
        subject = file.stem.removesuffix("_test").replace("_", " ")
        with file.open(encoding="utf-8", newline="") as rows:
            for number, row in enumerate(csv.reader(rows), start=1):
                record = _Record(file, number, {"id": f"{file.stem}:{number}"})
                if len(row) != 6:
                    raise record.fail(f"{len(row)} columns, expected 6 (question, A-D, answer)")
                yield _mmlu_item(record, row[0], row[1:5], row[5].strip(), subject)


def _bigbench(path: Path, skipped: dict[str, int]) -> Iterator[MCItem]:
    task = json.loads(path.read_text(encoding="utf-8"))
    prefix = task.get("task_prefix", "")
    input_prefix = task.get("example_input_prefix", "\nQ: ")
    output_prefix = task.get("example_output_prefix", "\nA: ")
    for number, example in enumerate(task.get("examples", []), start=1):
        record = _Record(path, number, example)
        if not example.get("target_scores"):
            reason = "no target_scores (not multiple choice)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        scores = record.get("target_scores", dict)
        question = record.get("input")
        context = f"{prefix}{input_prefix}{question}{output_prefix}".lstrip()
        options = list(scores)
        gold = max(range(len(options)), key=lambda i: scores[options[i]])
        yield record.item(tuple((context, o) for o in options), gold, question)


def _check_gold(record: _Record, label: int, n_choices: int) -> int:
    if not 0 <= label < n_choices:
        raise record.fail(f"label {label} is outside 0..{n_choices - 1}")
    return label


LOADERS: dict[str, Callable[[Path, dict[str, int]], Iterator[MCItem]]] = {
    "arc": _arc,
    "boolq": _boolq,
    "hellaswag": _hellaswag,
    "mmlu": _mmlu,
    "openbookqa": _openbookqa,
    "openbookqa_fact": functools.partial(_openbookqa, with_fact=True),
    "piqa": _piqa,
    "sciq": _sciq,
    "winogrande": _winogrande,
    "bigbench": _bigbench,
}


def load_task(kind: str, path: str | Path, limit: int | None = None, name: str = "") -> Task:
    """Task ``kind`` (a key of LOADERS) from ``path``; the first ``limit`` items if given."""
    if kind not in LOADERS:
        raise TaskError(f"unknown task {kind!r}; known: {', '.join(sorted(LOADERS))}")
    path = Path(path)
    if not path.exists():
        raise TaskError(f"{path}: no such file or directory (task {kind})")
    skipped: dict[str, int] = {}
    items = []
    for item in LOADERS[kind](path, skipped):
        if limit is not None and len(items) >= limit:
            break
        items.append(item)
    if not items:
        raise TaskError(f"{path}: no items for task {kind}")
    return Task(name or kind, str(path), items, skipped)


def parse_task_arg(arg: str) -> tuple[str, str, str]:
    """``KIND=PATH`` or ``NAME:KIND=PATH`` (e.g. ``arc_easy:arc=ARC-Easy-Test.jsonl``)."""
    spec, sep, path = arg.partition("=")
    if not sep or not path:
        raise TaskError(f"--task {arg!r}: expected KIND=PATH or NAME:KIND=PATH")
    name, _, kind = spec.rpartition(":")
    return name or kind, kind, path
