"""`msplit eval`'s command line: bad arguments are refused up front, on one line."""

import re

import pytest

from eval.cli import main, parse_args

BRANCHES = ["--branches", "b0", "b1", "b2", "b3"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--heldout-samples", "0", "argument --heldout-samples: must be an integer >= 1, not 0"),
        ("--top-k", "0", "argument --top-k: must be an integer >= 1, not 0"),
        ("--top-k", "9", "--top-k 9: more than the 4 branches"),
        ("--temperature", "0", "argument --temperature: must be a positive number, not 0"),
        ("--temperature", "-1", "argument --temperature: must be a positive number, not -1"),
        ("--batch-size", "0", "argument --batch-size: must be an integer >= 1, not 0"),
        ("--tensor", "0", "argument --tensor: must be an integer >= 1, not 0"),
    ],
)
def test_out_of_range_options_are_refused_by_argparse(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--clusters", "c", *BRANCHES, "--out", "o", option, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--out", "--output"])  # as the data commands spell it
def test_the_results_directory_takes_either_spelling(option):
    assert parse_args(["--clusters", "c", *BRANCHES, option, "o"]).out == "o"


def test_help_shows_every_option_and_its_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in [("--top-k", 1), ("--temperature", 0.1), ("--heldout-samples", 64),
                            ("--batch-size", 8)]:  # fmt: skip
        assert re.search(rf"{option} [A-Z_]+ [^()]+ \(default: {default}\)", text), option
    assert "--no-progress no progress bar" in text


def test_a_cluster_directory_without_a_manifest_is_one_line(tmp_path, capsys):
    code = main(["--clusters", str(tmp_path), *BRANCHES, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert error.startswith(f"msplit eval: {tmp_path / 'clusters.json'}: no readable cluster")


def test_a_model_parallel_layout_needs_its_processes(tmp_path, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    args = ["--clusters", str(tmp_path), *BRANCHES, "--out", str(tmp_path), "--tensor", "2"]
    assert main(args) == 2
    assert "needs a multiple of 2 processes, this launch has 1: start it with torchrun " \
        "--nproc-per-node 2" in capsys.readouterr().err  # fmt: skip
