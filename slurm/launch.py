"""Submit a training run to Slurm through submitit: one task per GPU (or CPU rank).

Each task runs ``megatron_split.train_cli.main`` and reads its rank from the Slurm
environment, so a run launched here is the same code path as one under torchrun.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import submitit

from megatron_split.config import ConfigError

# Exported in every job before its tasks start; a stage's `env` adds to or overrides them.
JOB_ENV = {
    # megatron.core orders TP/SP communication behind compute on one CUDA stream per device
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    # a collective that times out or a rank that dies ends the job (and its requeue) instead
    # of hanging until the time limit
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
    "NCCL_DEBUG": "WARN",
}


@dataclass
class SlurmConfig:
    """One stage's Slurm job: what a site asks of every job, and ``extra`` for the rest."""

    cluster: Literal["auto", "slurm", "local"] = "auto"  # auto: slurm when the cluster answers
    folder: str = "runs/slurm/%j"  # submitit's logs and pickles (%j = job id)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None  # node features, e.g. "h100&ib"
    exclusive: bool = False  # whole nodes
    nodes: int = 1
    tasks_per_node: int = 1  # one per GPU on GPU nodes
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: int | None = None
    timeout_min: int = 60
    # Seconds before the time limit at which Slurm sends SIGUSR2: the run saves and exits.
    signal_delay_s: int = 120
    max_requeues: int = 3  # after a time-out or preemption; then the job fails
    # More sbatch options: a value, or true for an option that takes none (requeue: true)
    extra: dict[str, str | int | bool] = field(default_factory=dict)
    # Exported in the job, over JOB_ENV; the job's shell expands them ("/opt/x/bin:$PATH")
    env: dict[str, str] = field(default_factory=dict)
    # Shell lines the job runs before its tasks: module loads, an environment to activate
    setup: list[str] = field(default_factory=list)
    python: str | None = None  # the job's interpreter (default: the one that submits)
    srun_args: list[str] = field(default_factory=list)  # e.g. ["--container-image=IMG"]

    # The least value of each integer field
    MINIMUMS: ClassVar[dict[str, int]] = {
        "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "gpus_per_node": 0,
        "timeout_min": 1, "signal_delay_s": 0, "max_requeues": 0,
    }  # fmt: skip

    def validate(self, where: str = "slurm") -> None:
        """Refuse, by field, what sbatch would reject or a job could not use, before
        anything is submitted."""
        for name, least in self.MINIMUMS.items():
            if getattr(self, name) < least:
                raise ConfigError(f"{where}.{name} must be >= {least}, got {getattr(self, name)}")
        if self.mem_gb is not None and self.mem_gb < 1:
            raise ConfigError(f"{where}.mem_gb must be >= 1 (or null: the partition's default)")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ConfigError(
                f"{where}.signal_delay_s={self.signal_delay_s} is not within the job's "
                f"{where}.timeout_min={self.timeout_min} minutes: the run would be told to "
                "save before it starts"
            )
        if self.gpus_per_node and self.tasks_per_node > self.gpus_per_node:
            raise ConfigError(
                f"{where}.tasks_per_node={self.tasks_per_node} with gpus_per_node="
                f"{self.gpus_per_node}: one task drives one GPU, so give at most one per GPU"
            )
        for key, value in self.extra.items():
            if value is False:
                raise ConfigError(f"{where}.extra.{key}: false sets no option; leave it out")

    @property
    def tasks(self) -> int:
        """Processes of one job: the world size of a run it holds."""
        return self.nodes * self.tasks_per_node

    def resolved_cluster(self) -> str:
        if self.cluster != "auto":
            return self.cluster
        return "slurm" if slurm_available() else "local"

    def executor(
        self, cluster: str | None = None, dependency: str | None = None, name: str = "msplit"
    ) -> submitit.AutoExecutor:
        """An executor with these parameters (on ``cluster``, default: the configured one)
        for jobs named ``name``; ``dependency`` is sbatch's (``afterok:ID:...``) and needs
        Slurm."""
        executor = submitit.AutoExecutor(
            folder=self.folder,
            cluster=cluster or self.resolved_cluster(),
            slurm_max_num_timeout=self.max_requeues,
            **({"slurm_python": self.python} if self.python else {}),
        )
        params = dict(
            name=name,
            nodes=self.nodes,
            tasks_per_node=self.tasks_per_node,
            cpus_per_task=self.cpus_per_task,
            timeout_min=self.timeout_min,
        )
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if executor.cluster == "slurm":
            params["slurm_signal_delay_s"] = self.signal_delay_s
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key):
                    params[f"slurm_{key}"] = getattr(self, key)
            if self.exclusive:
                params["slurm_exclusive"] = True
            site = {"reservation": self.reservation} if self.reservation else {}
            extra = site | dict(self.extra) | ({"dependency": dependency} if dependency else {})
            if extra:
                params["slurm_additional_parameters"] = extra  # true: a bare --flag
            exports = [f"export {k}={_expandable(v)}" for k, v in (JOB_ENV | self.env).items()]
            params["slurm_setup"] = [*self.setup, *exports]  # env over what the setup loads
            if self.srun_args:
                params["slurm_srun_args"] = list(self.srun_args)
        elif dependency:
            raise ValueError("job dependencies need Slurm; the local executor runs jobs now")
        executor.update_parameters(**params)
        return executor


def _expandable(value: object) -> str:
    """``value`` in double quotes: one word, in which the shell still expands ``$VAR``."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    return f'"{escaped}"'


def slurm_available() -> bool:
    """True when a Slurm controller answers (srun on PATH alone is not enough)."""
    if shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def submit_training(config: str | Path | None, overrides: list[str], slurm: SlurmConfig):
    """Submit one training run; returns the submitit Job (``job.results()``: exit codes).

    On SIGUSR2 the run saves a checkpoint at the next step boundary and hands the signal to
    submitit, which requeues the job (``Command.checkpoint``); the requeued job runs the same
    command, which resumes from that checkpoint."""
    from slurm.graph import Training

    argv = ([str(config)] if config is not None else []) + list(overrides)
    return slurm.executor().submit(Training(argv=argv))
