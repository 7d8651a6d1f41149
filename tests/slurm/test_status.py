"""Reading Slurm's accounting: which records are a node's own failure."""

import pytest

from slurm.status import JobRecord


@pytest.mark.parametrize(
    ("state", "reason", "host", "failed"),
    [
        ("FAILED", "NonZeroExitCode", "node1", True),
        ("TIMEOUT", "None", "node1", True),
        ("CANCELLED", "None", "node1", True),  # stopped while it ran
        # cancelled while it waited: its dependency failed, whatever reason accounting holds
        ("CANCELLED", "DependencyNeverSatisfied", "None assigned", False),
        ("CANCELLED", "None", "None assigned", False),
        ("COMPLETED", "None", "node1", False),
        ("PENDING", "Dependency", "None assigned", False),
    ],
)
def test_a_job_failed_only_if_it_ended_badly_after_it_started(state, reason, host, failed):
    record = JobRecord("123_0", state, "0:0", reason, "00:00:00", host)
    assert record.failed is failed
    assert record.cancelled_before_start is (state == "CANCELLED" and host == "None assigned")
