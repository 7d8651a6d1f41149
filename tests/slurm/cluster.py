"""Whether the tests have a Slurm cluster to submit to."""

import os

import pytest

from slurm.launch import slurm_available
from slurm.status import sacct_records


def need_slurm(accounting: bool = False) -> None:
    """Skip without a Slurm cluster (fail under MSPLIT_REQUIRE_SLURM, as in CI)."""
    missing = ("no Slurm controller answers" if not slurm_available() else
               "the cluster keeps no accounting (sacct)" if accounting and
               sacct_records(["1"]) is None else "")  # fmt: skip
    if missing and os.environ.get("MSPLIT_REQUIRE_SLURM"):
        pytest.fail(f"MSPLIT_REQUIRE_SLURM is set but {missing}")
    if missing:
        pytest.skip(f"{missing} (start one with slurm/local_cluster.sh start)")
