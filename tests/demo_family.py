"""`msplit demo` at a small size, run as a subprocess: a whole split family on disk."""

import subprocess
import sys
from pathlib import Path

# 2 clusters, a 12-step trunk, two 4-step branches.
DEMO_ARGS = ["--max-mb", "0.7", "--vocab-size", "1024", "--k", "2", "--branch-steps", "4",
             "train.steps=12", "train.eval_every=6", "train.log_every=6",
             "optim.schedule.warmup_steps=2", "train.progress=false",
             "train.tensorboard=false"]  # fmt: skip


def run_demo(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "megatron_split.cli", "demo", "--out", str(out), *DEMO_ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done
