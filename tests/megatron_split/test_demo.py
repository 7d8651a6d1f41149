"""`msplit demo` end to end at a small size: corpus, tokenizer, shards, embeddings, clusters,
trunk and one branch per cluster."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_resumes_as_a_no_op(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "megatron_split.cli", "demo", "--out", str(out)]
    cmd += ["--max-mb", "0.7", "--vocab-size", "1024", "--k", "2", "--branch-steps", "4"]
    cmd += ["train.steps=12", "train.eval_every=6", "train.log_every=6"]
    cmd += ["optim.schedule.warmup_steps=2", "train.progress=false", "train.tensorboard=false"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    manifest = json.loads((out / "shards" / "corpus.manifest.json").read_text())
    assert manifest["documents"] > 0 and manifest["tokens"] > 0
    records = [json.loads(x) for x in (out / "trunk" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert (out / "trunk" / "checkpoints" / "latest").read_text() == "step_0000012"
    summary = json.loads((out / "summary.json").read_text())
    assert [row["cluster"] for row in summary["clusters"]] == [0, 1]
    for cluster in (0, 1):
        branch = out / "branches" / f"cluster_{cluster}" / "checkpoints"
        assert (branch / "latest").read_text() == "step_0000004"
        lineage = json.loads((branch / "step_0000004" / "meta.json").read_text())["lineage"]
        assert lineage["parent_step"] == 12

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    for stage in ("corpus", "tokenizer", "shards", "embeddings", "clusters"):
        assert f"[{stage}] done already" in again.stderr
