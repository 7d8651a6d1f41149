"""The experiment graph's completion: a node is complete when its outputs are, and were
written by the settings planned now, upstream included."""

import json
import logging
import sys
from pathlib import Path

import pytest

from slurm.executors import REASON_CHARS, NodeLog, run_local
from slurm.graph import Command, Failed, Graph, Node
from slurm.status import status_table


def echo(path: Path, text: str) -> Command:
    return Command("tests.slurm.echo_task", [str(path), text], path)


def graph(out: Path, first: str, second: str = "b") -> Graph:
    nodes = [Node("first", [echo(out / "first.txt", first)]),
             Node("second", [echo(out / "second.txt", second)], after=["first"])]  # fmt: skip
    return Graph(nodes, out)


def test_a_complete_graph_is_skipped(tmp_path):
    assert run_local(graph(tmp_path, "a")) == {"first": "succeeded", "second": "succeeded"}
    assert run_local(graph(tmp_path, "a")) == {"first": "complete", "second": "complete"}
    elapsed = [line.split()[5] for line in status_table(graph(tmp_path, "a")).splitlines()[1:]]
    assert elapsed == ["00:00:00", "00:00:00"]  # the local executor's seconds, as sacct's


def test_other_settings_run_a_node_and_every_node_after_it_again(tmp_path):
    run_local(graph(tmp_path, "a"))
    changed = graph(tmp_path, "a2")  # the second node's own command is unchanged
    assert [node.name for node in changed if not node.done] == ["first", "second"]
    table = status_table(changed)
    assert table.count("written with other settings (here or upstream): runs again") == 2
    assert run_local(changed) == {"first": "succeeded", "second": "succeeded"}
    assert (tmp_path / "first.txt").read_text() == "a2"
    assert run_local(graph(tmp_path, "a2")) == {"first": "complete", "second": "complete"}
    # only what is downstream of a change runs again
    assert run_local(graph(tmp_path, "a2", "b2")) == {"first": "complete", "second": "succeeded"}


def test_ctrl_c_in_a_command_stops_the_run_and_marks_its_node_interrupted(tmp_path):
    assert run_local(graph(tmp_path, "ctrl-c")) == {"first": "interrupted"}
    nodes = json.loads((tmp_path / "experiment.json").read_text())["nodes"]
    assert nodes["first"]["state"] == "interrupted" and "second" not in nodes
    table = status_table(graph(tmp_path, "ctrl-c"), "exp.yaml")
    assert table.endswith("\ninterrupted: first; `msplit experiment run exp.yaml` resumes it")


def test_a_command_exiting_with_an_error_raises_and_fails_its_dependents(tmp_path):
    # raised, not returned: submitit counts a returned code as a successful job
    with pytest.raises(Failed, match="exited with 1"):
        echo(tmp_path / "x.txt", "fail")()
    assert run_local(graph(tmp_path, "fail")) == {"first": "failed", "second": "dependency failed"}


def test_each_task_of_an_array_is_named_as_it_starts(tmp_path, caplog):
    branches = [echo(tmp_path / f"cluster_{i}.txt", str(i)) for i in range(2)]
    with caplog.at_level(logging.INFO, logger="slurm.executors"):
        assert run_local(Graph([Node("branches", branches)], tmp_path)) == {"branches": "succeeded"}
    assert [m for m in caplog.messages if "task" in m and "running" not in m] == [
        f"branches: task 1/2, {tmp_path / 'cluster_0.txt'}",
        f"branches: task 2/2, {tmp_path / 'cluster_1.txt'}",
    ]


def test_a_failed_node_keeps_its_commands_own_message_and_its_log(tmp_path, capsys, caplog):
    # a real command that fails as the audit saw it: a task file that does not exist
    argv = ["--clusters", str(tmp_path / "clusters"), "--branches", "b0", "--task",
            "arc=/nonexistent.jsonl", "--out", str(tmp_path / "eval")]  # fmt: skip
    evaluate = Command("eval.cli", argv, tmp_path / "eval" / "results.jsonl")
    results = echo(tmp_path / "results.txt", "r")
    nodes = [Node("split_2/eval", [evaluate]), Node("results", [results], after=["split_2/eval"])]
    with caplog.at_level(logging.INFO, logger="slurm.executors"):  # as `msplit experiment run`
        states = run_local(Graph(nodes, tmp_path))
    assert states == {"split_2/eval": "failed", "results": "dependency failed"}
    message = "msplit eval: /nonexistent.jsonl: no such file or directory (task arc)"
    assert message in capsys.readouterr().err  # the terminal shows it as before
    log = tmp_path / "logs" / "split_2" / "eval.log"
    record = json.loads((tmp_path / "experiment.json").read_text())["nodes"]["split_2/eval"]
    assert (record["state"], record["reason"], record["log"]) == ("failed", message, str(log))
    text = log.read_text()  # its output, the executor's lines on it, and how it failed
    assert message in text and "split_2/eval: running 1 task(s)" in text
    assert "split_2/eval failed: eval.cli --clusters" in text
    rows = status_table(Graph(nodes, tmp_path), "exp.yaml").splitlines()
    assert rows[1].endswith(f"not written yet  <- {message}; log: {log}")
    assert rows[2].endswith("<- never runs: split_2/eval failed")
    rerun = "`msplit experiment run exp.yaml`"
    assert rows[-1] == f"failed: split_2/eval; read {log}, then rerun {rerun}"


def test_a_reason_is_one_short_line(tmp_path):
    streams = sys.stdout, sys.stderr
    with NodeLog(tmp_path / "node.log") as log:
        print("working", file=sys.stderr)
        sys.stderr.write("train: 40%\rtrain: 100%\n")  # a progress bar's redraws
        assert log.reason(Failed("exited with 1")) == "train: 100%"
        print("x" * 300, file=sys.stderr)
        print("the result", file=sys.stdout)  # stdout: in the log, not a reason
    assert log.reason(Failed("exited with 1")) == "x" * (REASON_CHARS - 3) + "..."
    assert log.reason(SystemExit("msplit eval: --tag a: expected KEY=VALUE")) == (
        "msplit eval: --tag a: expected KEY=VALUE"
    )
    assert log.reason(ValueError("bad\nvalue")) == "ValueError: bad"
    assert (tmp_path / "node.log").read_text().endswith("x" * 300 + "\nthe result\n")
    assert (sys.stdout, sys.stderr) == streams  # the terminal's again
