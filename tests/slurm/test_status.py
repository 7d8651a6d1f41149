"""`msplit experiment status`: which Slurm records are a node's own failure, what it shows when
no controller answers, each run's progress, cancelled nodes, and what to do next."""

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from slurm.executors import StateFile, cancel_slurm, slurm_states, submit_slurm
from slurm.graph import Command, Graph, Node, Training
from slurm.status import JobRecord, status_table
from tests.slurm.cluster import need_slurm

SUBMIT = "`msplit experiment submit exp.yaml`"


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


def chain(out: Path, *names: str, first: Command | None = None) -> Graph:
    """Nodes each after the one before, writing a file each (``first``: the first's task)."""
    tasks = [Command("tests.slurm.echo_task", [str(out / f"{n}.txt"), n], out / f"{n}.txt")
             for n in names]  # fmt: skip
    tasks[0] = first or tasks[0]
    return Graph([Node(n, [tasks[i]], after=list(names[i - 1 : i])) for i, n in enumerate(names)],
                 out)  # fmt: skip


def rows(table: str) -> dict[str, str]:
    return {line.split()[0]: line for line in table.split("\n\n")[0].splitlines()[1:]}


@pytest.fixture
def no_controller(tmp_path, monkeypatch) -> None:
    """Slurm's clients pointed at a cluster whose controller is not running: its port is
    one that nothing listens on."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        f"ClusterName=down\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\n"
        "NodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost Default=YES\n"
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))


def test_without_a_controller_status_shows_the_recorded_states_at_once(tmp_path, no_controller):
    graph = chain(tmp_path / "exp", "a", "b", "c", "d")
    record = StateFile(graph)
    for job, node in enumerate(graph, 100):
        record.set(node.name, state="submitted", job_id=str(job))
    start = time.monotonic()
    table = status_table(graph)
    assert time.monotonic() - start < 5, table  # squeue alone would wait ~9 s per call
    assert [rows(table)[n].split()[2] for n in "abcd"] == ["submitted"] * 4
    assert "(no Slurm controller answers; check with `scontrol ping`. States as " in table, table
    assert "accounting" not in table


def test_a_cancelled_node_is_resubmitted_and_stops_the_nodes_after_it(tmp_path, no_controller):
    graph = chain(tmp_path / "exp", "a", "b", "c", "d")
    record = StateFile(graph)
    record.set("a", state="submitted", job_id="100")
    for job, name in enumerate("bcd", 101):  # as `msplit experiment cancel --node b` leaves them
        record.set(name, state="cancelled", job_id=str(job))
    table = status_table(graph, "exp.yaml")
    assert rows(table)["b"].endswith(f"<- cancelled; {SUBMIT} resubmits it")
    assert rows(table)["c"].endswith("<- never runs: b was cancelled")
    assert rows(table)["d"].endswith("<- never runs: b was cancelled")
    assert "<-" not in rows(table)["a"] and "failed" not in table
    assert table.endswith(f"\ncancelled: b; {SUBMIT} resubmits it and the nodes after it")


def trained(run_dir: Path, saved: int, losses: dict[int, float]) -> None:
    """A run directory as training leaves it: its checkpoint at step ``saved`` and its
    logged metrics (a validation loss, then ``losses`` by step)."""
    checkpoint = run_dir / "checkpoints" / f"step_{saved:07d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "meta.json").write_text(json.dumps({"step": saved}))
    (run_dir / "checkpoints" / "latest").write_text(checkpoint.name)
    lines = [{"step": 0, "val_loss": 7.5}, *({"step": s, "loss": x} for s, x in losses.items())]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_each_run_shows_its_steps_and_its_loss_at_its_nodes_last_step(tmp_path):
    trunk = tmp_path / "trunk"
    trained(trunk, 200, {50: 7.1, 100: 6.565, 150: 6.2, 200: 5.923})
    branches = [tmp_path / f"cluster_{i}" for i in range(4)]
    for run, loss in zip(branches[:3], (5.685, 6.056, 6.051), strict=True):
        trained(run, 40, {20: 6.5, 40: loss})
    trained(branches[3], 5, {})  # saved at step 5, no loss logged yet
    graph = Graph([
        Node("trunk/step_100", [Training(marker=trunk, steps=100)]),
        Node("trunk/step_200", [Training(marker=trunk, steps=200)], after=["trunk/step_100"]),
        Node("split_100/branches", [Training(marker=run, steps=40) for run in branches],
             after=["trunk/step_100"]),
    ], tmp_path)  # fmt: skip
    progress = {name: line.split(None, 7)[7] for name, line in rows(status_table(graph)).items()}
    assert progress["trunk/step_100"] == "100/100 steps, last loss 6.565"
    assert progress["trunk/step_200"] == "200/200 steps, last loss 5.923"
    assert progress["split_100/branches"] == (
        "steps (last loss): 40/40 (5.685), 40/40 (6.056), 40/40 (6.051), 5/40 (-)"
    )


def test_an_experiment_that_never_ran_says_how_to_start_it(tmp_path):
    table = status_table(chain(tmp_path, "a", "b"), "exp.yaml")
    assert table.endswith(
        f"\nnothing has run under {tmp_path} yet: `msplit experiment plan exp.yaml` shows what "
        "it trains, `msplit experiment run exp.yaml` runs it here, `msplit experiment submit "
        "exp.yaml` on Slurm"
    )


def _sbatch(tmp_path: Path, *options: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--hold", f"--output={tmp_path}/%j.out",
                          *options, "--wrap", "true"], check=True, capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    return out.stdout.strip().split(";")[0]


@pytest.mark.slurm
def test_one_call_reads_the_queue_of_every_job(tmp_path):
    need_slurm()
    job, array = _sbatch(tmp_path), _sbatch(tmp_path, "--array=0-1")  # held: they stay queued
    try:
        gone = str(int(array) + 1000)  # a job the queue does not hold
        assert slurm_states([job, array, gone]) == {job: "PENDING", array: "PENDING"}
    finally:
        subprocess.run(["scancel", job, array], check=True, timeout=30)
    assert slurm_states([]) == {}


@pytest.mark.slurm
def test_a_node_cancelled_while_it_ran_is_not_a_failure(tmp_path):
    need_slurm(accounting=True)
    # a node whose job runs until it is cancelled (the standard library's timeit, sleeping)
    sleeps = Command("timeit", ["-n1", "-r1", "import time; time.sleep(300)"], tmp_path / "a.txt")
    graph = chain(tmp_path / "exp", "a", "b", "c", first=sleeps)
    ids = submit_slurm(graph)
    deadline = time.monotonic() + 120
    try:
        while slurm_states([ids["a"]]).get(ids["a"]) != "RUNNING":
            assert time.monotonic() < deadline, "the job of a never started"
            time.sleep(0.5)
        assert set(cancel_slurm(graph, ["a"])) == {"a", "b", "c"}
    finally:  # nothing left running, whatever failed
        subprocess.run(["scancel", *ids.values()], check=True, timeout=30)
    # accounting has the jobs' ends a moment after the cancel
    while (state := rows(status_table(graph))["a"].split()[2]) != "CANCELLED":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    table = status_table(graph, "exp.yaml")
    assert rows(table)["a"].endswith(f"<- cancelled; {SUBMIT} resubmits it")
    for name in ("b", "c"):
        assert rows(table)[name].endswith("<- never runs: a was cancelled"), table
    assert "FAILED" not in table and " failed" not in table


@pytest.mark.slurm
def test_a_failed_job_names_its_log_and_the_command_that_resubmits_it(tmp_path):
    need_slurm(accounting=True)
    fails = Command("tests.slurm.echo_task", [str(tmp_path / "a.txt"), "fail"], tmp_path / "a.txt")
    graph = chain(tmp_path / "exp", "a", "b", first=fails)
    submit_slurm(graph)
    deadline = time.monotonic() + 120
    # Slurm cancels b once a has failed, and its accounting has that a moment later
    while (state := rows(status_table(graph))["b"].split()[2]) != "CANCELLED":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    table = status_table(graph, "exp.yaml")
    assert rows(table)["a"].split()[2:5] == ["FAILED", rows(table)["a"].split()[3], "1:0"]
    log = rows(table)["a"].split("): ", 1)[1]
    assert "exited with 1" in Path(log).read_text()
    assert rows(table)["b"].endswith("<- never runs: a failed")
    assert table.endswith(f"\nfailed: a; read {log}, then rerun {SUBMIT}")
