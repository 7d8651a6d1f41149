"""Checkpoints: exact resume after SIGKILL, SIGTERM saves at a step boundary, resharding loads."""

import json
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

from megatron_split.checkpoint import latest_checkpoint, read_meta
from tests.megatron_split.runs import (
    command,
    env,
    kill_group,
    metrics,
    start,
    tiny_overrides,
    train,
    wait_for_step,
)

pytestmark = pytest.mark.slow

STEPS = 12


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    """An uninterrupted run with a checkpoint every 4 steps."""
    run_dir = tmp_path_factory.mktemp("reference")
    train(tiny_overrides(run_dir, shards, **{"train.steps": STEPS, "checkpoint.every": 4}))
    return run_dir


def test_checkpoints_are_complete_and_pruned(reference):
    root = reference / "checkpoints"
    assert (root / "latest").read_text() == "step_0000012"
    assert sorted(p.name for p in root.iterdir()) == [
        "latest",
        "step_0000004",
        "step_0000008",
        "step_0000012",
    ]
    meta = read_meta(latest_checkpoint(root))
    assert meta["step"] == 12
    assert meta["consumed_samples"] == 12 * 8
    assert meta["tokens"] == 12 * 8 * 64
    assert meta["layout"] == {"tensor": 1, "pipeline": 1, "data": 1}
    assert (latest_checkpoint(root) / "rng" / "rank_00000.pt").is_file()


def test_split_points_are_saved_and_never_pruned(shards, tmp_path):
    overrides = {"train.steps": STEPS, "checkpoint.every": 4, "checkpoint.keep_last": 1,
                 "checkpoint.keep_steps": "[3,6]"}  # fmt: skip
    train(tiny_overrides(tmp_path, shards, **overrides))
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert saved == ["step_0000003", "step_0000006", "step_0000012"]


@pytest.mark.parametrize(
    ("saves", "kill_between"),
    [
        ({"checkpoint.every": 4}, (5, STEPS - 2)),
        # A background write at every step, each started when the previous one is published:
        # a kill almost always lands during a write, early or late in the run.
        ({"checkpoint.every": 1, "checkpoint.async_save": "true"}, (3, 6)),
        ({"checkpoint.every": 1, "checkpoint.async_save": "true"}, (7, STEPS - 2)),
    ],
    ids=["sync", "async-early", "async-late"],
)
def test_kill_minus_9_then_resume_gives_identical_losses(
    shards, reference, tmp_path, saves, kill_between
):
    overrides = tiny_overrides(tmp_path, shards, **{"train.steps": STEPS, **saves})
    kill_at = random.Random().randint(*kill_between)
    proc = start(overrides)
    wait_for_step(tmp_path, kill_at, proc)
    if "checkpoint.async_save" in saves:
        # A step's metrics are written just before the last write is published and the next
        # begun: killing on them alone could land between the two, with no write in flight.
        wait_for_write_in_flight(tmp_path / "checkpoints", proc)
    kill_group(proc, signal.SIGKILL)
    proc.wait()
    latest = latest_checkpoint(tmp_path / "checkpoints")  # complete, whatever was in flight
    assert latest is not None and read_meta(latest)["step"] < STEPS
    if "checkpoint.async_save" in saves:  # killed with a write in flight, training ahead of it
        (in_flight,) = (tmp_path / "checkpoints").glob("step_*.tmp")
        assert read_meta(latest)["step"] < int(in_flight.name[5:12]) <= kill_at
    train(overrides)  # resumes from the last checkpoint
    assert metrics(tmp_path) == metrics(reference), f"killed at step {kill_at}"  # bitwise


def wait_for_write_in_flight(root, proc) -> None:
    deadline = time.monotonic() + 60
    while not list(root.glob("step_*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, "no write was started"
        time.sleep(0.005)


def test_async_checkpoints_are_the_synchronous_ones(shards, reference, tmp_path):
    overrides = {"train.steps": STEPS, "checkpoint.every": 4, "checkpoint.async_save": "true"}
    train(tiny_overrides(tmp_path, shards, **overrides))
    assert metrics(tmp_path) == metrics(reference)
    ours, theirs = tmp_path / "checkpoints", reference / "checkpoints"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    assert (ours / "latest").read_text() == (theirs / "latest").read_text()
    position = ("step", "consumed_samples", "tokens", "layout")
    for step_dir in theirs.glob("step_*"):
        got, want = read_meta(ours / step_dir.name), read_meta(step_dir)
        assert [got[key] for key in position] == [want[key] for key in position]


def test_a_run_trained_in_segments_equals_one_trained_at_once(shards, reference, tmp_path):
    """A trunk that stops at each split point (``train.stop_at_step``), each segment resumed
    by the next invocation, has the LR schedule, data order and losses of the whole run."""
    overrides = tiny_overrides(tmp_path, shards, **{"train.steps": STEPS, "checkpoint.every": 4})
    for stop in (3, 7, STEPS):
        proc = train([*overrides, f"train.stop_at_step={stop}"])
        assert result(proc)["status"] == ("completed" if stop == STEPS else "stopped_at_step")
        latest = read_meta(latest_checkpoint(tmp_path / "checkpoints"))
        assert latest["step"] == stop  # saved at the stop, off the every-4 grid
        assert latest["run"]["annealed"] == (stop == STEPS)
    for key in ("loss", "lr"):
        assert metrics(tmp_path, key) == metrics(reference, key)  # bitwise
    again = train(overrides)
    assert result(again) == {"status": "already_complete", "step": STEPS, "tokens": STEPS * 512,
                             "loss": None, "loop_seconds": 0.0, "steps_run": 0}  # fmt: skip
    assert f"is already complete at step {STEPS}: nothing to train" in again.stderr


def result(proc) -> dict:
    """What ``msplit train`` printed of its run, as JSON."""
    return json.loads(re.search(r"msplit: run \S+: (\{.*\})", proc.stderr)[1])


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGTERM, "preempted"), (signal.SIGINT, "interrupted")]
)
def test_a_signal_saves_at_a_step_boundary_and_exits_cleanly(shards, tmp_path, sig, status):
    overrides = tiny_overrides(tmp_path, shards, **{"train.steps": 500})
    proc = start(overrides)
    wait_for_step(tmp_path, 3, proc)
    kill_group(proc, sig)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    meta = read_meta(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["step"] == max(metrics(tmp_path))  # the last completed step, nothing after
    assert 3 <= meta["step"] < 500
    assert meta["consumed_samples"] == meta["step"] * 8
    stderr = proc.stderr.read()
    assert "Traceback" not in stderr
    assert f"{status} at step {meta['step']}: saved " in stderr
    assert "a rerun resumes from it" in stderr


def test_a_crashed_save_is_never_taken_for_a_checkpoint(shards, reference, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints" / "step_0000004", root / "step_0000004")
    (root / "latest").write_text("step_0000004")
    # A save that died half-way: the directory exists without its .tmp renamed.
    shutil.copytree(reference / "checkpoints" / "step_0000008", root / "step_0000008.tmp")
    (root / "step_0000008.tmp" / "meta.json").unlink()
    assert latest_checkpoint(root).name == "step_0000004"
    train(tiny_overrides(tmp_path, shards, **{"train.steps": STEPS, "checkpoint.every": 4}))
    resumed = metrics(tmp_path)
    assert min(resumed) == 5
    assert resumed == {s: v for s, v in metrics(reference).items() if s > 4}
    assert not list(root.glob("*.tmp"))


def test_a_latest_naming_a_deleted_step_resumes_the_newest_left(shards, reference, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints" / "step_0000004", root / "step_0000004")
    (root / "latest").write_text("step_0000008")  # deleted by hand
    train(tiny_overrides(tmp_path, shards, **{"train.steps": STEPS, "checkpoint.every": 4}))
    assert metrics(tmp_path) == {s: v for s, v in metrics(reference).items() if s > 4}


def test_a_latest_naming_a_deleted_step_with_none_left_is_a_one_line_error(shards, tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "latest").write_text("step_0000008")
    proc = subprocess.run(
        command(tiny_overrides(tmp_path, shards)), capture_output=True, text=True, env=env()
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"msplit train: config error: {root}/latest names step_0000008, which has no meta.json, "
        f"and no complete checkpoint is left: remove {root}/latest to start the run afresh"
    )


@pytest.mark.parametrize("layout", ["parallel.tensor=2", "parallel.pipeline=2"])
def test_saved_at_tp1_loads_resharded(shards, reference, tmp_path, layout):
    root = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints" / "step_0000008", root / "step_0000008")
    (root / "latest").write_text("step_0000008")
    train(tiny_overrides(tmp_path, shards, **{"train.steps": STEPS}) + [layout], nproc=2)
    expected = {s: v for s, v in metrics(reference).items() if s > 8}
    resumed = metrics(tmp_path)
    assert sorted(resumed) == sorted(expected)
    for step, loss in expected.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-5), f"step {step}"


def test_resume_refuses_a_different_model(shards, reference, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints" / "step_0000008", root / "step_0000008")
    (root / "latest").write_text("step_0000008")
    overrides = tiny_overrides(tmp_path, shards, **{"model.hidden_size": 128})
    proc = subprocess.run(
        command(overrides), capture_output=True, text=True, env=env(), timeout=300
    )
    assert proc.returncode == 2
    assert "hidden_size: 64 -> 128" in proc.stderr
    assert json.loads((root / "step_0000008" / "meta.json").read_text())["step"] == 8


def test_distributed_optimizer_resumes_exactly(shards, tmp_path):
    overrides = {"train.steps": 6, "checkpoint.every": 3, "parallel.distributed_optimizer": True}
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_overrides(first, shards, **overrides), nproc=2)
    shutil.copytree(first / "checkpoints" / "step_0000003", second / "checkpoints" / "step_0000003")
    (second / "checkpoints" / "latest").write_text("step_0000003")
    train(tiny_overrides(second, shards, **overrides), nproc=2)
    assert metrics(second) == {s: v for s, v in metrics(first).items() if s > 3}  # bitwise
