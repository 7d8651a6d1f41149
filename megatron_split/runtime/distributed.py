"""Process-group set-up: torchrun, Slurm (sbatch/srun or submitit), or a single process.

One code path at every scale: NCCL with CUDA, gloo without; the CPU compatibility layer is
installed here and only here, so nothing else in the package knows which device it runs on.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_split.config import ConfigError
from megatron_split.runtime import cpu_compat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as read from its launcher's environment."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "slurm" or "single"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ("gpu[07-08,11],cpu3" -> "gpu07"): the job's
    first node, where every task meets rank 0. Other forms ("a[1-2]-b[1-3]") ask scontrol."""
    simple = re.fullmatch(r"([^,\[\]]+)(?:\[([0-9,-]+)\])?(?:,.*)?", nodelist)
    if simple:
        prefix, ranges = simple.groups()
        return prefix + (re.split("[,-]", ranges)[0] if ranges else "")
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist],
                             capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "127.0.0.1"


def detect_launch_env(environ: dict[str, str] | None = None) -> LaunchEnv:
    """Read rank and rendezvous from torchrun's variables, else Slurm's, else run alone."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        job_id = int(env.get("SLURM_JOB_ID", "0"))
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR")
            or first_host(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")),
            # Every task of a job derives the same port from the job id, in 10000-29999:
            # below Linux's ephemeral ports (32768 up), which a client socket may hold.
            master_port=int(env.get("MASTER_PORT", 10000 + job_id % 20000)),
            launcher="slurm",
        )
    return LaunchEnv(0, 1, 0, "127.0.0.1", _free_port(), "single")


@dataclass(frozen=True)
class Runtime:
    """The initialised process: its device, backend and launch environment."""

    env: LaunchEnv
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0


def check_world_size(tensor_parallel: int, pipeline_parallel: int) -> None:
    """Refuse a model-parallel layout that this launch's processes cannot hold, saying how
    to launch it (before any process group starts)."""
    ranks, world = tensor_parallel * pipeline_parallel, detect_launch_env().world_size
    if world % ranks:
        raise ConfigError(
            f"tensor={tensor_parallel} x pipeline={pipeline_parallel} needs a multiple of "
            f"{ranks} processes, this launch has {world}: start it with torchrun "
            f"--nproc-per-node {ranks}"
        )


def init_distributed(
    tensor_parallel: int = 1, pipeline_parallel: int = 1, timeout_minutes: int = 30
) -> Runtime:
    """Initialise torch.distributed and megatron's model-parallel groups. Idempotent."""
    from datetime import timedelta

    check_world_size(tensor_parallel, pipeline_parallel)
    env = detect_launch_env()
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=timedelta(minutes=timeout_minutes),
        )
    if not cpu_compat.is_active() and cpu_compat.install():
        log.info("CUDA unavailable: megatron.core runs on CPU through the compatibility layer")

    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tensor_parallel,
            pipeline_model_parallel_size=pipeline_parallel,
            distributed_timeout_minutes=timeout_minutes,
        )
    return Runtime(env=env, device=device, backend=backend)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
