"""`msplit branch`: one cluster's continued pretraining from a trunk, from the command line."""

import json
import subprocess
import sys

import pytest

from tests.demo_family import heldout_loss

pytestmark = pytest.mark.slow


def branch(demo_family, run_dir, cluster: int) -> subprocess.CompletedProcess:
    # overrides before and after the options, as users write them
    cmd = [sys.executable, "-m", "megatron_split.cli", "branch", "configs/tiny.yaml",
           "train.progress=false",
           "--clusters", str(demo_family / "clusters"), "--cluster", str(cluster),
           "--from", str(demo_family / "trunk"), "--steps", "2",
           "--run-dir", str(run_dir), "train.tensorboard=false"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_branch_starts_from_the_trunk_on_its_cluster(demo_family, tmp_path):
    done = branch(demo_family, tmp_path / "b1", cluster=1)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "b1" / "checkpoints" / "step_0000002" / "meta.json").read_text())
    assert meta["lineage"]["parent_step"] == 12
    assert meta["config"]["data"]["paths"] == [str(demo_family / "clusters" / "cluster_01")]
    # step 0 is the trunk on cluster 1's held-out set: what the demo's evaluation measured
    records = [json.loads(x) for x in (tmp_path / "b1" / "metrics.jsonl").read_text().splitlines()]
    at_start = next(r["val_loss"] for r in records if r.get("step") == 0 and "val_loss" in r)
    assert at_start == pytest.approx(heldout_loss(demo_family, "trunk", 1), abs=1e-5)


def test_a_cluster_outside_the_manifest_is_refused(demo_family, tmp_path):
    done = branch(demo_family, tmp_path / "b9", cluster=9)
    assert done.returncode == 2
    assert "data: cluster 9 out of range: the manifest has k=2" in done.stderr


def test_a_branch_of_no_steps_is_refused_by_its_option(capsys):
    from megatron_split.branch_cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["c.yaml", "--clusters", "C", "--cluster", "0", "--from", "T", "--steps", "0",
                    "--run-dir", "R"])  # fmt: skip
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err


def test_a_released_model_branches_in_its_own_architecture(tokenizer_dir, tmp_path):
    from data_prep.cli import main as data_cli
    from tests.data_prep.conftest import make_records, write_jsonl
    from tests.megatron_split.hf_models import random_model

    random_model("llama-gqa-tied", tokenizer_dir, tmp_path / "hf")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", make_records(200, seed=5))
    shards, embeddings, clusters = tmp_path / "shard", tmp_path / "emb", tmp_path / "clusters"
    # tokenized with the model directory's own tokenizer.json, not the imported copy
    for argv in (["tokenize", "--input", str(corpus), "--output-prefix", str(shards),
                  "--tokenizer", f"hf:{tmp_path / 'hf'}", "--append-eod", "--no-progress"],
                 ["embed", "--shards", str(shards), "--output", str(embeddings), "--embedder",
                  "tfidf", "--no-progress"],
                 ["cluster", "--embeddings", str(embeddings), "--output", str(clusters), "--k",
                  "2", "--split", "80,20,0", "--no-progress"]):  # fmt: skip
        assert data_cli(argv) == 0
    cmd = [sys.executable, "-m", "megatron_split.cli", "branch", "configs/tiny.yaml",
           "train.progress=false", "train.tensorboard=false", "model.seq_length=64",
           "train.global_batch=4", "train.micro_batch=2", "--clusters", str(clusters),
           "--cluster", "0", "--from", f"hf:{tmp_path / 'hf'}", "--steps", "2",
           "--run-dir", str(tmp_path / "b0")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "b0" / "checkpoints" / "step_0000002" / "meta.json").read_text())
    assert meta["lineage"]["parent"] == str(tmp_path / "b0" / "parent" / "checkpoints" /
                                            "step_0000000")  # fmt: skip
    assert meta["lineage"]["parent_lineage"]["imported_from"] == str(tmp_path / "hf")
    model = meta["config"]["model"]
    assert (model["ffn_hidden_size"], model["rotary_base"]) == (96, 50000)  # not tiny.yaml's
    assert model["seq_length"] == 64  # how the branch trains is still its own
