"""The throughput benchmark runs end to end on a tiny corpus (its numbers are not tested):
every side, the shards compared, the memory probe."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.data_prep.conftest import make_records, write_jsonl

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "prep_throughput.py"


def test_benchmark_writes_its_keys(
    tmp_path: Path, bpe_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("prep_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "prep_throughput", module)  # its pool pickles by name
    spec.loader.exec_module(module)
    corpus = write_jsonl(tmp_path / "c.jsonl", make_records(120))
    out = tmp_path / "result.json"
    args = ["--json", str(out), "--corpus", str(corpus), "--tokenizer", bpe_spec, "--rounds", "2",
            "--min-seconds", "0", "--big-doc-mb", "0.5"]  # fmt: skip
    assert module.main(args) == 0
    result = json.loads(out.read_text())
    for key in ("tokens_per_s", "baseline_tokens_per_s", "limit_tokens_per_s",
                "speedup_vs_baseline", "fraction_of_limit"):  # fmt: skip
        assert result[key] > 0
    assert result["workers"] == 2 and result["tokens"] > 120
    assert result["identical_shards"] and result["baseline"].startswith("in-process copy")
    assert len(result["rounds"]) == 2 and result["peak_pss_mb"] > 0
    assert 0.5 <= result["big_document"]["document_mb"] < 0.6  # characters vs UTF-8 bytes
