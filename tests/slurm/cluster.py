"""Whether the tests have a Slurm cluster to submit to."""

import os
import subprocess

import pytest

from slurm.launch import slurm_available
from slurm.status import sacct_records

# slurm/local_cluster.sh's partition of two nodes (two slurmds on this host).
TWO_NODES = "twonodes"


def partition_nodes(partition: str) -> int:
    """How many nodes a partition has (0 when the cluster has no such partition)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    return len(out.stdout.split()) if out.returncode == 0 else 0


def need_slurm(accounting: bool = False, partition: str | None = None) -> None:
    """Skip without a Slurm cluster, or one without accounting or ``partition`` when the
    test needs them (fail under MSPLIT_REQUIRE_SLURM, as in CI)."""
    missing = ("no Slurm controller answers" if not slurm_available() else
               "the cluster keeps no accounting (sacct)" if accounting and
               sacct_records(["1"]) is None else
               f"the cluster has no partition {partition} of two nodes or more" if partition
               and partition_nodes(partition) < 2 else "")  # fmt: skip
    if missing and os.environ.get("MSPLIT_REQUIRE_SLURM"):
        pytest.fail(f"MSPLIT_REQUIRE_SLURM is set but {missing}")
    if missing:
        pytest.skip(f"{missing} (start one with slurm/local_cluster.sh start)")
