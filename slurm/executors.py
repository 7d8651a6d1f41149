"""Executors of the experiment graph: this machine (the default) or Slurm through submitit.

Both skip complete nodes and leave each node's state in ``OUT/experiment.json``:
``complete``, ``succeeded``, ``failed`` (with a short reason and its log),
``dependency failed`` (with the failed node upstream) or ``interrupted`` on the local
executor, and the job id on Slurm.

- ``run_local``: nodes in dependency order, their tasks in turn, in this process (so a run
  of many small jobs pays the start-up of torch and megatron once), each node's output also
  in its own log, ``OUT/logs/<node>.log``. A failed node fails its dependents and the others
  go on; SIGTERM, SIGUSR2 or Ctrl-C makes the running training save and stops the whole run;
  rerunning runs only what is not complete, and an interrupted training run resumes from its
  last checkpoint.
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
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

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


# A failed node's reason, as the state file keeps it and status shows it: about one line.
REASON_CHARS = 100


class NodeLog:
    """A node's own log while it runs here, ``OUT/logs/<node>.log`` (appended to by each
    run): what this process writes to stdout and stderr, where its tasks write (they run in
    this process, see ``Command.run``), and every log record. The terminal still shows all
    of it as before. Remembers the last line shown on stderr: a failed command's own
    message, its reason."""

    def __init__(self, path: Path):
        self.path = path
        self.last_line = ""
        self._partial = ""  # stderr text after its last newline
        self._records = _Records(self)

    def __enter__(self) -> NodeLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # line-buffered: `tail -f` follows it
        self._streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, self, False), _Tee(sys.stderr, self, True)
        # The terminal's log handlers hold the terminal's stream, not the tee: one of our own.
        logging.getLogger().addHandler(self._records)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        logging.getLogger().removeHandler(self._records)
        sys.stdout, sys.stderr = self._streams
        self._file.close()

    def write(self, text: str, stderr: bool) -> None:
        if not self._file.closed:  # a stream a task kept past its node writes to the terminal
            self._file.write(text)
        if stderr:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                line = line.rsplit("\r", 1)[-1].strip()  # a progress bar's last redraw
                if line:
                    self.last_line = line

    def reason(self, error: BaseException) -> str:
        """Why a node failed, in one short line: what a command that exited with an error
        said last on stderr, else the exception."""
        if isinstance(error, SystemExit) and isinstance(error.code, str):
            why = error.code  # sys.exit("message"): printed only when the interpreter exits
        elif isinstance(error, (Failed, SystemExit)) and self.last_line:
            why = self.last_line
        else:
            why = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        return why if len(why) <= REASON_CHARS else why[: REASON_CHARS - 3] + "..."


class _Tee:
    """A terminal stream that also writes to a node's log; everything else (isatty,
    encoding, fileno) is the terminal's, so progress bars draw as they would."""

    def __init__(self, stream: TextIO, log: NodeLog, stderr: bool):
        self._stream, self._log, self._stderr = stream, log, stderr

    def write(self, text: str) -> int:
        self._log.write(text, self._stderr)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Records(logging.Handler):
    """Every log record, into a node's log (warnings and errors count as stderr)."""

    def __init__(self, log: NodeLog):
        super().__init__()
        self._log = log
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self._log.write(self.format(record) + "\n", stderr=record.levelno >= logging.WARNING)


def local_log(graph: Graph, node: Node) -> Path:
    """Where the local executor keeps a node's output (a Slurm job's: ``log_folder``)."""
    return graph.out / "logs" / f"{node.name}.log"


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
        node_log = NodeLog(local_log(graph, node))
        logged = str(node_log.path)
        record.set(node.name, state="running", log=logged)
        start = time.monotonic()
        with node_log:
            log.info("[%d/%d] %s: running %d task(s)", i, len(pending), node.name,
                     len(node.tasks))  # fmt: skip
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
                record.set(node.name, state="interrupted", reason=str(stop) or "Ctrl-C", log=logged)
                log.warning("%s: %s; stopping here, a rerun resumes it", node.name, stop)
                break
            except (Exception, SystemExit) as error:  # noqa: BLE001 - any failure fails the node
                states[node.name] = "failed"
                record.set(node.name, state="failed", reason=node_log.reason(error), log=logged)
                why = str(error) if isinstance(error, Failed) else traceback.format_exc()
                log.error("%s failed: %s", node.name, why)
                continue
            states[node.name] = "succeeded"
            seconds = round(time.monotonic() - start, 1)
            record.set(node.name, state="succeeded", seconds=seconds, log=logged)
            log.info("[%d/%d] %s: done in %.0f s", i, len(pending), node.name, seconds)
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


def _script(graph: Graph, node: Node, after: list[str]) -> str:
    """The sbatch script of a node's job (one array of its tasks, if several)."""
    slurm = _executor(graph, node, after)._executor
    if len(node.tasks) > 1:
        slurm.parameters["map_count"] = len(node.tasks)
    return slurm._make_submission_file_text(slurm._submitit_command_str, "script")


def write_sbatch_scripts(graph: Graph, folder: Path) -> list[Path]:
    """Every node's sbatch script, as ``submit_slurm`` would send it, without submitting
    (dependencies name the nodes, ``afterok:<trunk>``, since no job id exists yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    scripts = []
    for node in graph:
        path = folder / f"{node.name.replace('/', '.')}.sbatch"
        path.write_text(_script(graph, node, [f"<{name}>" for name in node.after]))
        scripts.append(path)
    return scripts


def check_jobs(graph: Graph, nodes: list[Node]) -> None:
    """Ask Slurm whether it would take each node's job (``sbatch --test-only``, which
    queues nothing), so that a job it refuses (a partition, account or resource it does not
    have) stops the submission before any job is queued, naming every such node."""
    refused = []
    with tempfile.TemporaryDirectory(prefix="msplit-sbatch-") as folder:
        script = Path(folder) / "job.sbatch"
        for node in nodes:
            script.write_text(_script(graph, node, []))  # dependencies: checked when sent
            try:
                out = subprocess.run(["sbatch", "--test-only", str(script)],
                                     capture_output=True, text=True, timeout=60)  # fmt: skip
            except subprocess.TimeoutExpired:
                raise RuntimeError("sbatch --test-only: no answer in 60 s") from None
            if out.returncode:
                said = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
                refused.append(f"  {node.name}: {said[-1]}")
    if refused:
        raise ConfigError("Slurm refuses these jobs (see their stage's slurm: settings); "
                          "nothing was submitted:\n" + "\n".join(refused))  # fmt: skip


def submit_slurm(graph: Graph, wait: bool = False) -> dict[str, str]:
    """Submit every unfinished node; returns {node: Slurm job id} of those submitted. Every
    job is checked with Slurm first; nothing is queued unless all of them pass."""
    record = StateFile(graph)
    earlier = {node.name: record.nodes.get(node.name, {}).get("job_id") for node in graph}
    queued = slurm_states(sorted({job for job in earlier.values() if job}))  # one squeue call
    ids: dict[str, str] = {}  # this submission's jobs and the earlier ones still queued
    todo = []
    for node in graph:
        if node.done:
            _check_complete(node)
            continue
        previous = earlier[node.name]
        if previous and queued.get(previous):
            ids[node.name] = previous
            log.info("%s: still queued as %s, not submitted again", node.name, previous)
            continue
        todo.append(node)
    check_jobs(graph, todo)
    submitted: dict[str, list[submitit.Job]] = {}
    for node in todo:
        executor = _executor(graph, node, [ids[name] for name in node.after if name in ids])
        try:
            with executor.batch():
                jobs = [executor.submit(task) for task in node.tasks]
        except Exception as error:  # noqa: BLE001 - sbatch's own words, and what is queued
            queued = ", ".join(f"{name} ({ids[name]})" for name in submitted) or "none"
            raise RuntimeError(
                f"{node.name}: sbatch refused its job: {error}\nqueued before it: {queued}; "
                "`msplit experiment cancel` removes them, or a fixed `submit` keeps them"
            ) from None
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
    jobs = {name: record.nodes.get(name, {}).get("job_id") for name in chosen}
    queued = slurm_states(sorted({job for job in jobs.values() if job}))  # one squeue call
    cancelled = {}
    # Dependents first: a node cancelled before them would have Slurm kill them unrecorded.
    for node in reversed(graph.nodes):
        job = jobs.get(node.name)
        if job and queued.get(job):
            subprocess.run(["scancel", job], check=True, capture_output=True, timeout=30)
            record.set(node.name, state="cancelled", job_id=job)
            cancelled[node.name] = job
    return cancelled


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: the states squeue shows for it (its array tasks')} of the jobs it holds, in
    one call whatever their number (each call waits out a controller that does not answer)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%F %T"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:  # one job id that the queue does not hold (or no queue at all)
        return {}
    states: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        job, _, state = line.partition(" ")  # %F: an array task's job is its array's
        states.setdefault(job, set()).add(state.strip())
    return {job: ",".join(sorted(held)) for job, held in states.items()}


def slurm_state(job_id: str) -> str:
    """The states squeue shows for a job (its array tasks'), or "" when it holds none."""
    return slurm_states([job_id]).get(job_id, "")


def require_slurm() -> None:
    from slurm.launch import slurm_available

    if not slurm_available():
        raise ConfigError(
            "no Slurm controller answers (scontrol ping): run the graph on this machine with "
            "`msplit experiment run`, or start a cluster (slurm/local_cluster.sh start)"
        )
