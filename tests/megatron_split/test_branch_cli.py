"""`msplit branch`: one cluster's continued pretraining from a trunk, from the command line."""

import json
import subprocess
import sys

import pytest

from tests.demo_family import heldout_loss

pytestmark = pytest.mark.slow


def branch(demo_family, run_dir, cluster: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "megatron_split.cli", "branch", "configs/tiny.yaml",
           "train.progress=false", "train.tensorboard=false",
           "--clusters", str(demo_family / "clusters"), "--cluster", str(cluster),
           "--from", str(demo_family / "trunk"), "--steps", "2",
           "--run-dir", str(run_dir)]  # fmt: skip
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
