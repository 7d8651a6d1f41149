"""Run `msplit train` in real subprocesses (one process, or torchrun) and read its metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TIMEOUT_S = 300


def tiny_overrides(run_dir: Path, shards: list[str], **extra) -> list[str]:
    base = {
        "run_dir": str(run_dir),
        "data.paths": "[" + ",".join(shards) + "]",
        "model.num_layers": 2,
        "model.hidden_size": 64,
        "model.num_attention_heads": 4,
        "model.seq_length": 64,
        "train.steps": 10,
        "train.global_batch": 8,
        "train.micro_batch": 2,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.tensorboard": False,
        "train.progress": False,
        "checkpoint.save_at_end": False,
        "optim.lr": 3e-3,
        "optim.schedule.warmup_steps": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def python(nproc: int = 1) -> list[str]:
    """The interpreter, under torchrun with ``nproc`` processes when there are several: the
    start of a command that goes on with ``-m MODULE ...``."""
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}"]  # fmt: skip


def command(overrides: list[str], nproc: int = 1) -> list[str]:
    return [*python(nproc), "-m", "megatron_split.train_cli", *overrides]


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.setdefault("OMP_NUM_THREADS", "1")
    return out


def train(overrides: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        command(overrides, nproc), capture_output=True, text=True, timeout=TIMEOUT_S, env=env()
    )
    if proc.returncode != 0:
        pytest.fail(f"training failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def start(overrides: list[str], nproc: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        command(overrides, nproc),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=True,  # so the whole process group can be signalled
    )


def metrics(run_dir: Path, key: str = "loss") -> dict[int, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    path = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and max(metrics(run_dir), default=0) >= step:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before step {step}:\n{proc.stderr.read()[-4000:]}")
        time.sleep(0.05)
    pytest.fail(f"run did not reach step {step} in {TIMEOUT_S}s")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
