"""Continued pretraining from another run's checkpoint (the branching primitive)."""

import subprocess

import pytest

from megatron_split.checkpoint import latest_checkpoint, read_meta
from tests.megatron_split.runs import command, env, metrics, tiny_overrides, train

pytestmark = pytest.mark.slow

EVAL = {"train.eval_every": 1, "train.eval_batches": 2}


@pytest.fixture(scope="module")
def trunk(shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trunk")
    train(tiny_overrides(run_dir, shards[:1], **{"train.steps": 8, "checkpoint.every": 4}, **EVAL))
    return run_dir


def test_branch_starts_from_the_parent_weights_with_a_fresh_schedule(shards, trunk, tmp_path):
    # Evaluated before its first step, the branch is the trunk: same validation loss on the
    # trunk's own validation data.
    branch = {
        "train.steps": 1,
        "optim.schedule.warmup_steps": 0,
        "train.eval_at_start": True,
        "checkpoint.save_at_end": True,
    }
    train(tiny_overrides(tmp_path, shards[:1], **branch, **EVAL) + [f"init.checkpoint={trunk}"])
    assert metrics(tmp_path, "val_loss")[0] == pytest.approx(
        metrics(trunk, "val_loss")[8], abs=1e-6
    )
    meta = read_meta(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["step"] == 1 and meta["consumed_samples"] == 8  # step and data start at 0
    lineage = meta["lineage"]
    assert lineage["parent"] == str((trunk / "checkpoints" / "step_0000008").resolve())
    assert (lineage["parent_step"], lineage["parent_tokens"]) == (8, 8 * 8 * 64)
    assert lineage["optimizer_from_parent"] is False
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step_0000001",
    ]


def test_branch_on_other_data_learns_it_and_resumes_itself(shards, trunk, tmp_path):
    overrides = tiny_overrides(tmp_path, shards[1:], **{"train.steps": 6, "checkpoint.every": 3})
    overrides.append(f"init.checkpoint={trunk / 'checkpoints'}")
    train(overrides)
    first = metrics(tmp_path)
    assert first[6] < first[1]
    # Restarted after its end, it resumes its own checkpoint, not the parent's.
    train(overrides[:-1] + ["train.steps=6", f"init.checkpoint={trunk}"])
    meta = read_meta(latest_checkpoint(tmp_path / "checkpoints"))
    assert meta["step"] == 6 and meta["lineage"]["parent_step"] == 8
    assert metrics(tmp_path) == first


def test_missing_parent_is_a_config_error(shards, tmp_path):
    from megatron_split.config import ConfigError, load_config
    from megatron_split.train.config import RunConfig

    with pytest.raises(ConfigError, match="init.checkpoint: .*no checkpoint here"):
        load_config(
            RunConfig, None, [f"data.paths=[{shards[0]}]", f"init.checkpoint={tmp_path}"]
        ).validate()


def test_a_resumed_run_whose_parent_or_config_changed_is_refused(shards, trunk, tmp_path):
    overrides = tiny_overrides(tmp_path, shards[1:], **{"train.steps": 4, "checkpoint.every": 2})
    from_step = {s: f"init.checkpoint={trunk / 'checkpoints' / f'step_{s:07d}'}" for s in (4, 8)}
    train([*overrides, "train.steps=2", from_step[8]])  # a branch stopped at step 2 of 4

    def refused(extra: list[str]) -> str:
        done = subprocess.run(command([*overrides, *extra]), capture_output=True, text=True,
                              env=env(), timeout=300)  # fmt: skip
        assert done.returncode == 2, done.stderr[-3000:]
        return done.stderr

    # train.steps itself is part of the run: 2 -> 4 is a change, and so is another parent
    assert "train.steps: 2 -> 4" in refused([from_step[8]])
    stderr = refused(["train.steps=2", from_step[4], "optim.lr=0.001"])
    assert "lineage.parent_step: 8 -> 4" in stderr and "optim.lr: 0.003 -> 0.001" in stderr
    assert "checkpoint.allow_changes=true" in stderr  # the error says how to go on anyway
    # operational fields (logging, evaluation, the layout) are not changes of the run
    train([*overrides, "train.steps=2", from_step[8], "train.log_every=5", "train.eval_every=1"])
    train([*overrides, from_step[8], "checkpoint.allow_changes=true"])  # resumed on purpose
    assert read_meta(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 4
