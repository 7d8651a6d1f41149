"""`msplit experiment status`: where each node of an experiment stands, and why.

A node's state comes from Slurm's accounting when its jobs were submitted (``sacct``: state,
exit code, pending or cancel reason, elapsed time and host of each array task), from the
queue when the cluster keeps no accounting (``squeue``), and from ``OUT/experiment.json``
for the local executor. Its progress comes from its outputs: a training run's steps and
last loss, a command's marker. A failed task names its log; a node that can never run
names the failure upstream that stops it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.core.utils import JobPaths

from slurm.executors import StateFile, log_folder, slurm_state
from slurm.graph import Graph, Node, finished_step

SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason", "Elapsed", "NodeList")
# Slurm states after which a job never completes; CANCELLED counts only for a job that
# started (one cancelled while it waited failed nowhere: most often a failed dependency,
# which is the upstream node's failure, not this node's).
FAILED_STATES = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "CANCELLED"}  # fmt: skip


@dataclass(frozen=True)
class JobRecord:
    """One line of ``sacct -X``: a job, or one task (``123_4``) or pending range of an
    array."""

    job_id: str
    state: str
    exit_code: str
    reason: str
    elapsed: str
    host: str

    @property
    def task(self) -> int | None:
        """The array index, for a single array task."""
        _, _, index = self.job_id.partition("_")
        return int(index) if index.isdigit() else None

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES and not self.cancelled_before_start

    @property
    def cancelled_before_start(self) -> bool:
        # Accounting's Reason is the one last sent to it, which for a job Slurm cancels on
        # a failed dependency may still be "None": that the job never had a host is what holds.
        return self.state == "CANCELLED" and self.host == "None assigned"


def sacct_records(job_ids: list[str]) -> dict[str, list[JobRecord]] | None:
    """{job id: the records of it and its array tasks}; None when the cluster keeps no
    accounting (or sacct cannot be run)."""
    if not job_ids:
        return {}
    argv = ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids),
            f"--format={','.join(SACCT_FIELDS)}"]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    records: dict[str, list[JobRecord]] = {}
    for line in out.stdout.splitlines():
        job, state, exit_code, reason, elapsed, host = line.split("|")
        # "CANCELLED by 0": the state, then who
        record = JobRecord(job, state.split()[0], exit_code, reason, elapsed, host)
        records.setdefault(job.partition("_")[0], []).append(record)
    return records


def last_loss(run_dir: Path) -> float | None:
    """The last training loss a run logged."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    loss = None
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        loss = record.get("loss", loss)
    return loss


def progress(node: Node, done: bool, record: dict[str, Any]) -> str:
    if not node.trainings:
        if done:
            return "written"
        if any(task.outdated() for task in node.tasks):
            return "written with other settings (here or upstream): runs again"
        return record.get("error", "not written yet")
    # a trunk segment is done at its own end, whatever the later segments have trained
    steps = " ".join(f"{min(finished_step(t.marker), t.steps)}/{t.steps}" for t in node.trainings)
    losses = [loss for task in node.trainings if (loss := last_loss(task.marker)) is not None]
    return f"{steps} steps" + (", last loss " + " ".join(f"{x:.3f}" for x in losses)
                               if losses else "")  # fmt: skip


def _clock(seconds: float) -> str:
    """Seconds as sacct writes an elapsed time: [D-]HH:MM:SS."""
    days, rest = divmod(round(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _summary(records: list[JobRecord]) -> tuple[str, str, str, str]:
    """(state, exit code, elapsed, host) of a node's jobs: every state, the first non-zero
    exit code, the longest time, every host."""
    states = ",".join(dict.fromkeys(r.state for r in records))
    codes = [r.exit_code for r in records if r.exit_code != "0:0"]
    elapsed = max((r.elapsed for r in records), key=lambda e: (len(e), e))
    hosts = ",".join(dict.fromkeys(r.host for r in records if r.host != "None assigned"))
    return states, codes[0] if codes else "0:0", elapsed, hosts or "-"


class Status:
    """Every node's state and the reason behind it, read once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.known = StateFile(graph).nodes
        jobs = [r["job_id"] for r in self.known.values() if r.get("job_id")]
        self.accounting = sacct_records(jobs)

    def records(self, node: Node) -> list[JobRecord]:
        job = self.known.get(node.name, {}).get("job_id")
        return (self.accounting or {}).get(job, []) if job else []

    def failed(self, node: Node) -> bool:
        record = self.known.get(node.name, {})
        return record.get("state") == "failed" or any(r.failed for r in self.records(node))

    def upstream_failure(self, node: Node) -> str | None:
        """The nearest failed node this one (transitively) needs."""
        seen, frontier = set(), list(node.after)
        while frontier:
            name = frontier.pop(0)
            if name in seen:
                continue
            seen.add(name)
            if self.failed(self.graph[name]):
                return name
            frontier += self.graph[name].after
        return None

    def why(self, node: Node, records: list[JobRecord]) -> str:
        """A failed task's log, a pending job's reason, a node that never runs' cause."""
        for r in records:
            if r.failed:
                stderr = JobPaths(log_folder(self.graph, node), r.job_id, task_id=0).stderr
                return f"task {r.task or 0} {r.state} (exit {r.exit_code}): {stderr}"
        cancelled = any(r.cancelled_before_start for r in records)
        blocked = cancelled or self.known.get(node.name, {}).get("state") == "dependency failed"
        if blocked or (records and all(r.state == "PENDING" for r in records)):
            upstream = self.upstream_failure(node)
            if upstream is not None:
                return f"never runs: {upstream} failed"
        if cancelled:
            return "cancelled before it started"
        pending = [r.reason for r in records if r.state == "PENDING" and r.reason != "None"]
        return f"pending: {pending[0]}" if pending else ""

    def table(self) -> str:
        width = self.graph.name_width
        header = (f"{'node':<{width}} {'done':<4} {'state':<16} {'job':<8} {'exit':<5} "
                  f"{'elapsed':<10} {'host':<8} progress")  # fmt: skip
        lines = [header]
        for node in self.graph:
            done = node.done
            record = self.known.get(node.name, {})
            job = record.get("job_id", "")
            records = self.records(node)
            if records:
                state, exit_code, elapsed, host = _summary(records)
            else:
                state = record.get("state", "-")
                if job and self.accounting is None:  # no accounting: the queue, if it holds it
                    state = slurm_state(job) or state
                exit_code = host = "-"
                seconds = record.get("seconds")  # the local executor's
                elapsed = "-" if seconds is None else _clock(seconds)
            if done and not records:
                state = "complete"
            line = (f"{node.name:<{width}} {'yes' if done else 'no':<4} {state:<16} "
                    f"{job or '-':<8} {exit_code:<5} {elapsed:<10} {host:<8} "
                    f"{progress(node, done, record)}")  # fmt: skip
            why = "" if done else self.why(node, records)
            lines.append(line + (f"  <- {why}" if why else ""))
        if not self.known and not any(node.done for node in self.graph):
            lines += ["", f"(nothing has run under {self.graph.out} yet)"]
        if self.accounting is None and any(r.get("job_id") for r in self.known.values()):
            lines += ["", "(no Slurm accounting here: states from the queue only; exit codes, "
                      "reasons and times need slurmdbd, see slurm/local_cluster.sh)"]  # fmt: skip
        return "\n".join(lines)


def status_table(graph: Graph) -> str:
    return Status(graph).table()
