"""Training through a real Slurm: two srun tasks form a DP=2 gloo group from Slurm's env."""

import os

import pytest

from megatron_split.data.synthetic import write_synthetic_shard
from slurm.launch import SlurmConfig, slurm_available, submit_training
from tests.megatron_split.runs import metrics, tiny_overrides, train

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not slurm_available():
        if os.environ.get("MSPLIT_REQUIRE_SLURM"):
            pytest.fail("MSPLIT_REQUIRE_SLURM is set but no Slurm controller answers")
        pytest.skip("no Slurm cluster (start one with slurm/local_cluster.sh start)")


def test_two_task_slurm_job_matches_single_process(tmp_path):
    shard = write_synthetic_shard(tmp_path / "shard", seed=3)
    reference, submitted = tmp_path / "reference", tmp_path / "slurm"
    train(tiny_overrides(reference, [shard]))
    job = submit_training(
        None,
        tiny_overrides(submitted, [shard]),
        SlurmConfig(cluster="slurm", folder=str(tmp_path / "jobs" / "%j"), tasks_per_node=2),
    )
    assert job.results() == [0, 0]
    got, want = metrics(submitted), metrics(reference)
    assert sorted(got) == sorted(want)
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
