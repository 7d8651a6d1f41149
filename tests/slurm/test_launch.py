"""Training through a real Slurm: two srun tasks, on one node or on two, form a DP=2 gloo
group from Slurm's env."""

import json
import subprocess
import time

import pytest

from megatron_split.data.synthetic import write_synthetic_shard
from slurm.launch import SlurmConfig, submit_training
from slurm.status import sacct_records
from tests.megatron_split.runs import metrics, tiny_overrides, train
from tests.slurm.cluster import TWO_NODES, need_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    need_slurm()


@pytest.mark.parametrize("nodes", [1, 2], ids=["one-node", "two-nodes"])
def test_two_task_slurm_job_matches_single_process(tmp_path, nodes):
    """Two tasks on one node, or one on each of two (each node its own slurmd: the rank
    from SLURM_PROCID, the rendezvous on the job's first node)."""
    if nodes > 1:
        need_slurm(accounting=True, partition=TWO_NODES)
    shard = write_synthetic_shard(tmp_path / "shard", seed=3)
    reference, submitted = tmp_path / "reference", tmp_path / "slurm"
    train(tiny_overrides(reference, [shard]))
    partition = TWO_NODES if nodes > 1 else None
    slurm = SlurmConfig(cluster="slurm", folder=str(tmp_path / "jobs" / "%j"), nodes=nodes,
                        tasks_per_node=2 // nodes, partition=partition)  # fmt: skip
    job = submit_training(None, tiny_overrides(submitted, [shard]), slurm)
    assert job.results() == [0, 0]
    deadline = time.monotonic() + 60
    while (record := sacct_records([job.job_id])[job.job_id][0]).state != "COMPLETED":
        assert time.monotonic() < deadline, f"accounting still says {record}"
        time.sleep(0.5)  # accounting lags the job's end by a moment
    assert len(record.host.split(",")) == nodes, record.host  # e.g. "localhost,vm"
    got, want = metrics(submitted), metrics(reference)
    assert sorted(got) == sorted(want)
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), f"step {step}"


def test_preempted_job_saves_requeues_and_resumes_exactly(tmp_path):
    shard = write_synthetic_shard(tmp_path / "shard", seed=4)
    reference, submitted = tmp_path / "reference", tmp_path / "slurm"
    overrides = {"train.steps": 200, "train.log_every": 1, "checkpoint.save_at_end": True}
    train(tiny_overrides(reference, [shard], **overrides))
    job = submit_training(
        None,
        tiny_overrides(submitted, [shard], **overrides),
        SlurmConfig(cluster="slurm", folder=str(tmp_path / "jobs" / "%j")),
    )
    deadline = time.monotonic() + 120
    while not (submitted / "metrics.jsonl").exists() or max(metrics(submitted)) < 5:
        assert time.monotonic() < deadline, "the job did not start training"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    assert job.result() == 0  # the requeued job ran to the end
    saved = sorted(p.name for p in (submitted / "checkpoints").glob("step_*"))
    assert len(saved) == 2 and saved[-1] == "step_0000200", saved  # preemption + final
    preempted_at = json.loads((submitted / "checkpoints" / saved[0] / "meta.json").read_text())
    assert 5 <= preempted_at["step"] < 200
    assert metrics(submitted) == metrics(reference)  # resumed exactly
