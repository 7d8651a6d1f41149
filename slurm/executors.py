"""Executors of the experiment graph: this machine (the default) or Slurm through submitit.

Both skip complete nodes and leave each node's state in ``OUT/experiment.json``:
``complete``, ``succeeded``, ``failed`` (with the error), ``dependency failed`` (with the
failed node upstream) or ``interrupted`` on the local executor, and the job id on Slurm.

- ``run_local``: nodes in dependency order, their tasks in turn, in this process (so a run
  of many small jobs pays the start-up of torch and megatron once). A failed node fails its
  dependents and the others go on; SIGTERM, SIGUSR2 or Ctrl-C makes the running training
  save and stops the whole run; rerunning runs only what is not complete, and an interrupted
  training run resumes from its last checkpoint.
- ``submit_slurm``: every unfinished node at once, as a job array chained to the nodes it
  needs by ``afterok`` (a job whose dependency failed is cancelled by Slurm); a job that an
  earlier submission left queued or running is not submitted again, and its dependents wait
  for it. ``cancel_slurm`` cancels the jobs of some nodes and of every node after them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit

from megatron_split.checkpoint.checkpointer import write_atomic
from megatron_split.config import ConfigError
from slurm.graph import Failed, Graph, Node
from slurm.launch import SlurmConfig

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A task that stopped cleanly before its end (a preemption signal): the run stops."""


class StateFile:
    """The last known state of every node, kept in ``OUT/experiment.json``.

    Several processes may record states at once (jobs of one experiment, a submission while
    another runs): each update re-reads the file under an exclusive lock on
    ``OUT/experiment.json.lock`` and replaces it atomically, so no update is lost."""

    def __init__(self, graph: Graph):
        self.path = graph.state_file
        self.nodes = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.path.read_text())["nodes"] if self.path.is_file() else {}

    def set(self, name: str, **record: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self.nodes = self._read()
            self.nodes[name] = {**record, "time": time.time()}
            write_atomic(self.path, json.dumps({"nodes": self.nodes}, indent=2) + "\n")


def _check_complete(node: Node) -> None:
    for task in node.tasks:
        task.check()


def run_local(graph: Graph) -> dict[str, str]:
    """Run every unfinished node here; returns {node: state}. Raises nothing for a failed
    node (its state says why); the caller decides the exit code."""
    states: dict[str, str] = {}
    record = StateFile(graph)
    pending = [node for node in graph if not node.done]
    for node in graph:
        if node.done:
            _check_complete(node)
            states[node.name] = "complete"
    if not pending:
        log.info("all %d nodes are complete: nothing to run", len(states))
    for i, node in enumerate(pending, 1):
        failed = [name for name in node.after if states.get(name, "").endswith("failed")]
        if failed:
            states[node.name] = "dependency failed"
            record.set(node.name, state=states[node.name], upstream=failed)
            log.error("[%d/%d] %s: not run, %s failed", i, len(pending), node.name, failed[0])
            continue
        log.info("[%d/%d] %s: running %d task(s)", i, len(pending), node.name, len(node.tasks))
        record.set(node.name, state="running")
        start = time.monotonic()
        try:
            for j, task in enumerate(node.tasks, 1):
                if task.done():
                    task.check()
                    continue
                if len(node.tasks) > 1:  # which of the array (a branch: its run directory)
                    log.info("%s: task %d/%d, %s", node.name, j, len(node.tasks), task.marker)
                task()  # raises Failed when the command exits with an error (it says why)
                if not task.done():  # a run that saved and stopped on SIGTERM or SIGUSR2
                    raise Interrupted(f"{task.marker} stopped before its end")
        except (Interrupted, KeyboardInterrupt) as stop:  # a signal, or Ctrl-C outside training
            states[node.name] = "interrupted"
            record.set(node.name, state="interrupted", error=str(stop) or "Ctrl-C")
            log.warning("%s: %s; stopping here, a rerun resumes it", node.name, stop)
            break
        except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure fails the node
            states[node.name] = "failed"
            record.set(node.name, state="failed", error=f"{type(error).__name__}: {error}")
            why = str(error) if isinstance(error, Failed) else traceback.format_exc()
            log.error("%s failed: %s", node.name, why)
            continue
        states[node.name] = "succeeded"
        record.set(node.name, state="succeeded", seconds=round(time.monotonic() - start, 1))
        log.info("[%d/%d] %s: done in %.0f s", i, len(pending), node.name,
                 time.monotonic() - start)  # fmt: skip
    return states


def log_folder(graph: Graph, node: Node) -> Path:
    """Where submitit writes a node's job logs (``%j``: the job id): under the experiment
    unless its stage sets ``slurm.folder``."""
    if node.slurm.folder == SlurmConfig().folder:
        return graph.out / "jobs" / "%j"
    return Path(node.slurm.folder)


def _executor(graph: Graph, node: Node, after: list[str]) -> submitit.AutoExecutor:
    """The node's Slurm executor."""
    slurm = replace(node.slurm, folder=str(log_folder(graph, node)))
    dependency = f"afterok:{':'.join(after)}" if after else None
    if dependency:  # a job whose dependency failed is cancelled, not left pending forever
        slurm = replace(slurm, extra={"kill-on-invalid-dep": "yes", **slurm.extra})
    return slurm.executor(cluster="slurm", dependency=dependency, name=f"msplit:{node.name}")


def write_sbatch_scripts(graph: Graph, folder: Path) -> list[Path]:
    """Every node's sbatch script, as ``submit_slurm`` would send it, without submitting
    (dependencies name the nodes, ``afterok:<trunk>``, since no job id exists yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = []
    for node in graph:
        slurm = _executor(graph, node, [f"<{name}>" for name in node.after])._executor
        if len(node.tasks) > 1:  # submitted as one array of its tasks
            slurm.parameters["map_count"] = len(node.tasks)
        path = folder / f"{node.name.replace('/', '.')}.sbatch"
        path.write_text(slurm._make_submission_file_text(slurm._submitit_command_str, "dry-run"))
        scripts.append(path)
    return scripts


def submit_slurm(graph: Graph, wait: bool = False) -> dict[str, str]:
    """Submit every unfinished node; returns {node: Slurm job id} of those submitted."""
    record = StateFile(graph)
    ids: dict[str, str] = {}  # this submission's jobs and the earlier ones still queued
    submitted: dict[str, list[submitit.Job]] = {}
    for node in graph:
        if node.done:
            _check_complete(node)
            continue
        previous = record.nodes.get(node.name, {}).get("job_id")
        if previous and slurm_state(previous):
            ids[node.name] = previous
            log.info("%s: still queued as %s, not submitted again", node.name, previous)
            continue
        executor = _executor(graph, node, [ids[name] for name in node.after if name in ids])
        with executor.batch():
            jobs = [executor.submit(task) for task in node.tasks]
        submitted[node.name] = jobs
        ids[node.name] = str(jobs[0].job_id).split("_")[0]
        record.set(node.name, state="submitted", job_id=ids[node.name])
        log.info("%s: submitted %s (%d task(s))", node.name, ids[node.name], len(jobs))
    if wait:
        for name, jobs in submitted.items():
            for job in jobs:
                try:
                    job.result()
                except submitit.core.utils.FailedJobError:
                    raise RuntimeError(f"{name}: job {job.job_id} failed; see "
                                       f"{job.paths.stderr}") from None  # fmt: skip
    return {name: ids[name] for name in submitted}


def cancel_slurm(graph: Graph, names: list[str] | None = None) -> dict[str, str]:
    """Cancel the queued or running jobs of the nodes ``names`` (default: every node) and of
    every node after them; returns {node: Slurm job id} of those cancelled."""
    known = {node.name for node in graph}
    unknown = sorted(set(names or []) - known)
    if unknown:
        raise ConfigError(f"no nodes named {unknown} in this experiment")
    chosen = set(names or known)
    for node in graph:  # in dependency order: a node's dependents come after it
        if chosen & set(node.after):
            chosen.add(node.name)
    record = StateFile(graph)
    cancelled = {}
    # Dependents first: a node cancelled before them would have Slurm kill them unrecorded.
    for node in reversed(graph.nodes):
        job = record.nodes.get(node.name, {}).get("job_id")
        if node.name in chosen and job and slurm_state(job):
            subprocess.run(["scancel", job], check=True, capture_output=True, timeout=30)
            record.set(node.name, state="cancelled", job_id=job)
            cancelled[node.name] = job
    return cancelled


def slurm_state(job_id: str) -> str:
    """The states squeue shows for a job (its array tasks'), or "" when it holds none."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode != 0:
        return ""
    return ",".join(sorted(set(out.stdout.split())))


def require_slurm() -> None:
    from slurm.launch import slurm_available

    if not slurm_available():
        raise ConfigError(
            "no Slurm controller answers (scontrol ping): run the graph on this machine with "
            "`msplit experiment run`, or start a cluster (slurm/local_cluster.sh start)"
        )
