"""The clustering benchmark on any labelled corpus (--label-key, --text-key): NMI and purity
per embedder and per number of tokens read, clean errors for bad input, and documents the
tokenizer refuses skipped and counted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from data_prep.embedders import DEFAULT_MAX_TOKENS
from tests.data_prep.conftest import write_jsonl
from tests.data_prep.labelled_shards import labelled_records

DEFAULT = DEFAULT_MAX_TOKENS["tfidf"]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("cluster_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(path: Path) -> Path:
    """Four separable domains, their label under `domain` and their text under `body`."""
    domains = dict.fromkeys(["law", "code", "cooking", "astronomy"], 30)
    records = [{"body": r["text"], "domain": r["label"]} for r in labelled_records(domains)]
    records.append({"body": "a NUL \x00 is corruption", "domain": "law"})
    return write_jsonl(path, records)


def test_the_benchmark_scores_each_setting_on_a_labelled_corpus(bench, tmp_path, bpe_spec):
    out = tmp_path / "quality.json"
    corpus = _corpus(tmp_path / "c.jsonl")
    argv = ["--json", str(out), "--corpus", str(corpus), "--label-key", "domain", "--text-key",
            "body", "--tokenizer", bpe_spec, "--skip-minilm", "--tfidf-max-tokens",
            f"16,{DEFAULT}", "--seeds", "2", "--scale-docs", "999"]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["k"] == 4
    assert [(r["max_tokens"], r["seed"]) for r in result["runs"]] == [
        (16, 0), (DEFAULT, 0), (16, 1), (DEFAULT, 1)]  # fmt: skip
    for sample in result["samples"]:
        # The NUL document, if drawn, is skipped and counted, never silently lost.
        drawn = sample["documents_per_label"]["law"] == 31
        assert sample["skipped"] == ({"nul_char": 1} if drawn else {}), sample
    summary = {s["max_tokens"]: s for s in result["summary"]}
    assert summary[DEFAULT]["median_nmi"] > 0.9 and summary[DEFAULT]["seeds"] == 2
    assert result["nmi_tfidf"] == summary[DEFAULT]["median_nmi"]  # the headline: the default


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"body": "text", "source": "a"}', r"c\.jsonl:2: no field 'domain' \(name .* --label-key"),
        ('{"body": "text", "domain": [1]}', r"c\.jsonl:2: field 'domain' is a list, expected a"),
        ('{"domain": "a"}', r"c\.jsonl:2: field 'body' missing or not a string"),
        ('{"body": "text", "domain": "a"', r"c\.jsonl:2: not JSON"),
        ('["body", "domain"]', r"c\.jsonl:2: not a JSON object"),
    ],
)  # fmt: skip
def test_bad_input_is_named_by_file_line_and_field(bench, tmp_path, capsys, line, message):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"body": "fine", "domain": "b"}\n' + line + "\n")
    argv = ["--json", str(tmp_path / "q.json"), "--corpus", str(corpus), "--label-key", "domain",
            "--text-key", "body", "--skip-minilm"]  # fmt: skip
    assert bench.main(argv) == 2
    assert capsys.readouterr().err.startswith("cluster_quality: ")
    with pytest.raises(bench.CorpusError, match=message):
        bench.read_labels(corpus, "domain", "body")
    assert not (tmp_path / "q.json").exists()


def test_one_label_is_refused(bench, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": "x", "label": "a"}] * 3)
    with pytest.raises(bench.CorpusError, match="1 label"):
        bench.read_labels(corpus, "label", "text")
