"""The experiment's state file under concurrent writers: every update survives."""

import json
import multiprocessing
import time

from slurm.executors import StateFile
from slurm.graph import Graph

WRITERS, UPDATES = 4, 25


def _write(out: str, writer: int, start_at: float) -> None:
    from pathlib import Path

    record = StateFile(Graph([], Path(out)))  # read once, as a job does at its start
    time.sleep(max(0.0, start_at - time.time()))  # every writer at once
    for update in range(UPDATES):
        record.set(f"writer_{writer}/node_{update}", state="succeeded", seconds=update)


def test_concurrent_processes_lose_no_update(tmp_path):
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 8  # after every process has started
    writers = [context.Process(target=_write, args=(str(tmp_path), w, start_at))
               for w in range(WRITERS)]  # fmt: skip
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    nodes = json.loads((tmp_path / "experiment.json").read_text())["nodes"]
    assert sorted(nodes) == sorted(f"writer_{w}/node_{u}" for w in range(WRITERS)
                                   for u in range(UPDATES))  # fmt: skip
    assert all(record["state"] == "succeeded" for record in nodes.values())
