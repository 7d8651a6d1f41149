"""`msplit experiment status`: where each node of an experiment stands, and why.

A node's state comes from Slurm's accounting when its jobs were submitted (``sacct``: state,
exit code, pending or cancel reason, elapsed time and host of each array task), from the
queue when the cluster keeps no accounting (``squeue``, one call for every job), and from
``OUT/experiment.json`` for the local executor or when no Slurm controller answers. Its
progress comes from its outputs: each training run's steps and loss at the node's last
step, a command's marker. A failed node names its reason and log, a cancelled one how to
resubmit it, a node that can never run the failure or cancellation upstream that stops it;
the table ends with what to do next.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from submitit.core.utils import JobPaths

from slurm.executors import StateFile, log_folder, slurm_states
from slurm.graph import Graph, Node, Training, finished_step
from slurm.launch import slurm_available

SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason", "Elapsed", "NodeList")
# Slurm states after which a job never completes; CANCELLED counts only for a job that
# started (one cancelled while it waited failed nowhere: most often a failed dependency,
# which is the upstream node's failure, not this node's) and that the user did not cancel
# (`msplit experiment cancel` records that).
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


def loss_at(run: Training) -> float | None:
    """The last training loss a run logged up to its node's last step (a trunk segment's
    own, not a later segment's)."""
    metrics = run.marker / "metrics.jsonl"
    if not metrics.is_file():
        return None
    loss = None
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and record["step"] <= run.steps:
            loss = record["loss"]
    return loss


def progress(node: Node, done: bool) -> str:
    if not node.trainings:
        if done:
            return "written"
        if any(task.outdated() for task in node.tasks):
            return "written with other settings (here or upstream): runs again"
        return "not written yet"
    # a trunk segment is done at its own end, whatever the later segments have trained
    runs = [(f"{min(finished_step(t.marker), t.steps)}/{t.steps}", loss_at(t))
            for t in node.trainings]  # fmt: skip
    if len(runs) == 1:
        steps, loss = runs[0]
        return f"{steps} steps" + (f", last loss {loss:.3f}" if loss is not None else "")
    return "steps (last loss): " + ", ".join(
        f"{steps} ({'-' if loss is None else f'{loss:.3f}'})" for steps, loss in runs
    )


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


def _it(names: list[str]) -> str:
    return "it" if len(names) == 1 else "them"


class Status:
    """Every node's state and the reason behind it, read once. ``experiment`` names the
    experiment as its commands take it (its file and overrides), for the hints."""

    def __init__(self, graph: Graph, experiment: str = "EXPERIMENT.yaml"):
        self.graph, self.experiment = graph, experiment
        self.nodes = {node.name: node for node in graph}
        self.done = {node.name: node.done for node in graph}
        self.known = StateFile(graph).nodes
        self.jobs = sorted({r["job_id"] for r in self.known.values() if r.get("job_id")})
        # Asked once, first: without a controller every squeue waits ~9 s before it gives up.
        self.answered = bool(self.jobs) and slurm_available()
        self.accounting = sacct_records(self.jobs) if self.answered else None
        self.queue = slurm_states(self.jobs) if self.answered and self.accounting is None else {}

    def records(self, node: Node) -> list[JobRecord]:
        job = self.known.get(node.name, {}).get("job_id")
        return (self.accounting or {}).get(job, []) if job else []

    def cancelled(self, node: Node) -> bool:
        """Whether the user cancelled its job (`msplit experiment cancel`) and nothing since
        resubmitted it."""
        return self.known.get(node.name, {}).get("state") == "cancelled"

    def failed(self, node: Node) -> bool:
        if self.cancelled(node):
            return False
        record = self.known.get(node.name, {})
        return record.get("state") == "failed" or any(r.failed for r in self.records(node))

    def stopper(self, node: Node) -> Node | None:
        """The failed or cancelled node upstream that stops this one: the nearest such node
        it (transitively) needs, or the one that stops that (a cancel cancels every node
        after it too)."""
        seen, frontier = set(), list(node.after)
        while frontier:
            name = frontier.pop(0)
            if name in seen:
                continue
            seen.add(name)
            upstream = self.nodes[name]
            if not self.done[name] and (self.failed(upstream) or self.cancelled(upstream)):
                return self.stopper(upstream) or upstream
            frontier += upstream.after
        return None

    def never_runs(self, stopper: Node) -> str:
        return f"never runs: {stopper.name} " + (
            "was cancelled" if self.cancelled(stopper) else "failed"
        )

    def failure_log(self, node: Node) -> str | None:
        """The log of a failed node: its first failed task's (Slurm) or its own (here)."""
        for r in self.records(node):
            if r.failed:
                return str(JobPaths(log_folder(self.graph, node), r.job_id, task_id=0).stderr)
        return self.known.get(node.name, {}).get("log")

    def why(self, node: Node, records: list[JobRecord]) -> str:
        """A failed node's reason and log, a pending job's reason, a node that never runs'
        cause, a cancelled node's remedy."""
        record = self.known.get(node.name, {})
        stopper = self.stopper(node)
        if self.cancelled(node):
            if stopper:
                return self.never_runs(stopper)
            return f"cancelled; `msplit experiment submit {self.experiment}` resubmits it"
        failed = [r for r in records if r.failed]
        if failed:  # the first, whose log failure_log names
            r = failed[0]
            return f"task {r.task or 0} {r.state} (exit {r.exit_code}): {self.failure_log(node)}"
        if record.get("state") == "failed":  # here: the command's own last words, its log
            return f"{record.get('reason', 'failed')}; log: {record.get('log', '-')}"
        cancelled = any(r.cancelled_before_start for r in records)
        blocked = cancelled or record.get("state") == "dependency failed"
        if stopper and (blocked or (records and all(r.state == "PENDING" for r in records))):
            return self.never_runs(stopper)
        if cancelled:
            return "cancelled before it started"
        if record.get("state") == "interrupted":
            return record.get("reason", "")
        pending = [r.reason for r in records if r.state == "PENDING" and r.reason != "None"]
        return f"pending: {pending[0]}" if pending else ""

    def hints(self) -> list[str]:
        """What to do next: one line for every failed node, for the interrupted ones, for
        the cancelled ones, or how to start an experiment that never ran."""
        run = f"`msplit experiment run {self.experiment}`"
        submit = f"`msplit experiment submit {self.experiment}`"
        if not self.known and not any(self.done.values()):
            return [f"nothing has run under {self.graph.out} yet: `msplit experiment plan "
                    f"{self.experiment}` shows what it trains, {run} runs it here, {submit} "
                    "on Slurm"]  # fmt: skip
        left = [node for node in self.graph if not self.done[node.name]]
        lines = [f"failed: {node.name}; read {self.failure_log(node)}, then rerun "
                 f"{submit if self.known[node.name].get('job_id') else run}"
                 for node in left if self.failed(node)]  # fmt: skip
        interrupted = [n.name for n in left if self.known.get(n.name, {}).get("state")
                       == "interrupted"]  # fmt: skip
        if interrupted:
            lines.append(f"interrupted: {', '.join(interrupted)}; {run} resumes {_it(interrupted)}")
        cancelled = [n.name for n in left if self.cancelled(n) and not self.stopper(n)]
        if cancelled:
            lines.append(f"cancelled: {', '.join(cancelled)}; {submit} resubmits {_it(cancelled)} "
                         f"and the nodes after {_it(cancelled)}")  # fmt: skip
        return lines

    def table(self) -> str:
        width = self.graph.name_width
        header = (f"{'node':<{width}} {'done':<4} {'state':<16} {'job':<8} {'exit':<5} "
                  f"{'elapsed':<10} {'host':<8} progress")  # fmt: skip
        lines = [header]
        for node in self.graph:
            done = self.done[node.name]
            record = self.known.get(node.name, {})
            job = record.get("job_id", "")
            records = self.records(node)
            if records:
                state, exit_code, elapsed, host = _summary(records)
            else:
                state = self.queue.get(job) or record.get("state", "-")
                exit_code = host = "-"
                seconds = record.get("seconds")  # the local executor's
                elapsed = "-" if seconds is None else _clock(seconds)
            if done and not records:
                state = "complete"
            line = (f"{node.name:<{width}} {'yes' if done else 'no':<4} {state:<16} "
                    f"{job or '-':<8} {exit_code:<5} {elapsed:<10} {host:<8} "
                    f"{progress(node, done)}")  # fmt: skip
            why = "" if done else self.why(node, records)
            lines.append(line + (f"  <- {why}" if why else ""))
        if self.jobs and not self.answered:
            recorded = self.graph.state_file
            lines += ["", "(no Slurm controller answers; check with `scontrol ping`. States as "
                      f"{recorded} recorded them and the outputs show them)"]  # fmt: skip
        elif self.jobs and self.accounting is None:
            lines += ["", "(no Slurm accounting here: states from the queue only; exit codes, "
                      "reasons and times need slurmdbd, see slurm/local_cluster.sh)"]  # fmt: skip
        hints = self.hints()
        return "\n".join(lines + ([""] + hints if hints else []))


def status_table(graph: Graph, experiment: str = "EXPERIMENT.yaml") -> str:
    """The status table; ``experiment`` is how the hints name the experiment (its file and
    overrides, as the user typed them)."""
    return Status(graph, experiment).table()
