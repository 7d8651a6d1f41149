"""`msplit phonebook` end to end at a tiny size: every (budget, split) run and its recall."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_phonebook_experiment_runs_every_split_and_measures_recall(tmp_path):
    out = tmp_path / "pb"
    cmd = [sys.executable, "-m", "megatron_split.cli", "phonebook", "--out", str(out),
           "--entries", "20", "--repeats", "4", "--budgets", "6", "--fractions", "0,0.5,1",
           "model.seq_length=64", "train.global_batch=4", "train.micro_batch=2",
           "optim.schedule.warmup_steps=1", "train.progress=false",
           "train.tensorboard=false"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())["budgets"]
    assert list(results["6"]) == ["0", "3", "6"]
    for recall in results["6"].values():
        assert 0.0 <= recall["recall_a"] <= 1.0 and 0.0 <= recall["recall_b"] <= 1.0
    assert (out / "recall.png").stat().st_size > 0
    # the split-at-3 branch started from the trunk's step 3, the split-at-0 one from scratch
    branch = json.loads((out / "runs" / "T6_s3" / "checkpoints" / "step_0000003" / "meta.json")
                        .read_text())  # fmt: skip
    assert branch["lineage"]["parent_step"] == 3
    scratch = json.loads((out / "runs" / "T6_s0" / "checkpoints" / "step_0000006" / "meta.json")
                         .read_text())  # fmt: skip
    assert scratch["lineage"] == {}
