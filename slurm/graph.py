"""The experiment graph: nodes of tasks with declared inputs and completion markers.

A task is one ``main(argv)`` of a project module (``msplit data ...``, ``msplit train``,
``msplit eval``, ``laws``, the report), so the same task runs in this process (the local
executor) or as a submitit job on Slurm, where it is pickled by reference. A node is the
tasks one Slurm job array holds (the k branches of a split point, say), the nodes it runs
after, and its Slurm resources. A task knows when it is complete from its outputs alone:
a command from the marker it writes last, a training run from its latest checkpoint. So a
finished node is skipped, and an interrupted one is run again and resumes (training from
its checkpoint, tokenization and embedding from their finished parts).

A node's version hashes its tasks' command lines and the versions of the nodes it runs
after, and a finished command stamps its marker with it. A marker stamped with another
version was written with other settings, here or upstream (another ``eval.heldout_samples``,
branches trained on for more tokens): the command is not complete and runs again, and so
does everything after it. A training run is complete by its checkpoints instead, whose
saved config its resume checks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import submitit

from megatron_split.checkpoint import latest_checkpoint, read_meta
from megatron_split.checkpoint.checkpointer import write_atomic
from megatron_split.config import ConfigError
from slurm.launch import SlurmConfig

Arm = Literal["trunk", "specialist", "standard", "standard_per_model"]


class Failed(Exception):
    """A task whose command exited with an error (it printed the reason itself)."""


@dataclass
class Command:
    """``main(argv)`` of ``module``; complete once ``marker`` (written last) exists, stamped
    with this task's ``version`` (its node's, which Graph sets)."""

    module: str
    argv: list[str]
    marker: Path
    version: str = ""

    def __call__(self) -> int:
        """Run the command; one that exits with an error raises, so that its Slurm job fails
        too (submitit counts a returned code as success) and afterok stops what follows."""
        code = self.run()
        if code:
            raise Failed(f"{self.module} {' '.join(self.argv)} exited with {code}")
        self.stamp_marker()
        return 0

    def stamp_marker(self) -> None:
        if self.marker.is_file():
            write_atomic(self.stamp, json.dumps({"version": self.version}) + "\n")

    def run(self) -> int:
        return int(importlib.import_module(self.module).main(list(self.argv)) or 0)

    @property
    def stamp(self) -> Path:
        return self.marker.with_name(f".{self.marker.name}.version")

    def done(self) -> bool:
        return self.marker.is_file() and not self.outdated()

    def outdated(self) -> bool:
        """Whether the marker exists but was written by another version of this task."""
        try:
            return json.loads(self.stamp.read_text())["version"] != self.version
        except (FileNotFoundError, ValueError, KeyError):
            return self.marker.is_file()

    def check(self) -> None:
        """Refuse a complete output that this task would not have produced (no-op here)."""

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit's hook on preemption or time-out: requeue the same task, which resumes."""
        return submitit.helpers.DelayedSubmission(self)


@dataclass
class ConsumedCommand(Command):
    """A task whose output a later node merges and removes (a tokenize array task's
    partitions): complete once its marker exists, or the output that consumed it does."""

    consumed_by: Path = Path()

    def done(self) -> bool:
        return super().done() or self.consumed_by.is_file()


@dataclass
class Training(Command):
    """``msplit train CONFIG [overrides]`` of one run; complete at its final step.

    ``tokens`` and ``flops`` are what the plan says the run will train, ``checkpoints`` and
    ``checkpoint_bytes`` how many checkpoints it keeps and the size of each."""

    module: str = "megatron_split.train_cli"
    argv: list[str] = field(default_factory=list)
    marker: Path = Path()  # the run directory
    steps: int = 0
    arm: Arm = "trunk"
    tokens: int = 0
    flops: float = 0.0
    checkpoints: int = 0
    checkpoint_bytes: int = 0

    def stamp_marker(self) -> None:
        """Nothing: a run is complete by its checkpoints, which carry its config."""

    def done(self) -> bool:
        return finished_step(self.marker) >= self.steps

    def outdated(self) -> bool:
        return False  # a changed config is refused by ``check`` (or trained on, if allowed)

    def check(self) -> None:
        """A complete run whose saved config or parent differs from the planned one is an
        error naming the fields, as its resume would be."""
        from megatron_split.config import load_config
        from megatron_split.train.config import RunConfig
        from megatron_split.train.loop import check_resumable

        planned = load_config(RunConfig, self.argv[0], self.argv[1:]).resolve()
        final = latest_checkpoint(self.marker / "checkpoints")
        check_resumable(planned, read_meta(final), final)


def finished_step(run_dir: Path) -> int:
    latest = latest_checkpoint(run_dir / "checkpoints")
    return read_meta(latest)["step"] if latest is not None else 0


@dataclass
class Node:
    name: str  # "trunk", "split_100/branches", "h64/split_100/eval", "laws", ...
    tasks: list[Command]  # one Slurm job array; run in turn by the local executor
    after: list[str] = field(default_factory=list)  # nodes this one needs complete
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    @property
    def done(self) -> bool:
        return all(task.done() for task in self.tasks)

    @property
    def trainings(self) -> list[Training]:
        return [task for task in self.tasks if isinstance(task, Training)]


class Graph:
    """Nodes in an order where each comes after the nodes it needs."""

    def __init__(self, nodes: list[Node], out: Path):
        self.nodes, self.out = nodes, out
        versions: dict[str, str] = {}
        for node in nodes:
            if node.name in versions:
                raise ConfigError(f"two nodes are named {node.name}")
            missing = [name for name in node.after if name not in versions]
            if missing:
                raise ConfigError(f"node {node.name} needs {missing}, planned after it or never")
            inputs = [[task.module, task.argv] for task in node.tasks]
            inputs += [versions[name] for name in node.after]
            version = hashlib.sha256(json.dumps(inputs, default=str).encode()).hexdigest()[:16]
            versions[node.name] = version
            for task in node.tasks:
                task.version = version

    def __iter__(self):
        return iter(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    @property
    def name_width(self) -> int:
        """A column wide enough for every node's name."""
        return max(34, *(len(node.name) for node in self.nodes))

    @property
    def state_file(self) -> Path:
        return self.out / "experiment.json"
