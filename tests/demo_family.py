"""`msplit demo` at a small size, run as a subprocess: a whole split family on disk."""

import json
import subprocess
import sys
from pathlib import Path

TRUNK_STEPS, BRANCH_STEPS, TOKENS_PER_STEP = 12, 4, 16 * 128
SPLIT = f"split_{TRUNK_STEPS}"  # the demo branches at the trunk's end
# 2 clusters, a 12-step trunk, two 4-step branches and the standard arm.
DEMO_ARGS = ["data.max_mb=0.7", "data.vocab_size=1024", "data.k=2",
             f"trunk.tokens={TRUNK_STEPS * TOKENS_PER_STEP}",
             f"branches.tokens={BRANCH_STEPS * TOKENS_PER_STEP}",
             'overrides=["train.eval_every=6", "train.log_every=6", "train.progress=false", '
             '"train.tensorboard=false"]',
             'trunk.overrides=["optim.schedule.warmup_steps=2"]']  # fmt: skip


def run_demo(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "megatron_split.cli", "demo", "--out", str(out), *DEMO_ARGS]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def branches(out: Path) -> list[str]:
    """The demo's specialists, in cluster order."""
    return [str(out / SPLIT / f"cluster_{c}") for c in (0, 1)]


def heldout_loss(out: Path, model: str, cluster: int) -> float:
    """What the demo's evaluation measured: ``model`` on ``cluster``'s held-out set."""
    rows = [
        json.loads(x) for x in (out / SPLIT / "eval" / "results.jsonl").read_text().splitlines()
    ]
    return next(r["value"] for r in rows if r["eval"] == "heldout" and r["metric"] == "loss"
                and r["model"] == model and r["cluster"] == cluster)  # fmt: skip
