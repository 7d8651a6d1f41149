"""What a run records of itself: config hash, diffs, code version, law coordinates, and the
checkpoints it keeps."""

from dataclasses import asdict
from pathlib import Path

import pytest

from megatron_split.checkpoint import CheckpointConfig
from megatron_split.config import ConfigError, load_config
from megatron_split.train.config import RunConfig
from megatron_split.train.identity import (
    code_version,
    config_diff,
    config_hash,
    law_coordinates,
)


def run(*overrides: str) -> dict:
    return asdict(load_config(RunConfig, "configs/tiny.yaml", list(overrides), inputs=False))


def test_the_hash_covers_what_the_run_computes_and_nothing_else():
    base = config_hash(run())
    for operational in ("run_dir=elsewhere", "parallel.tensor=2", "train.log_every=1",
                        "train.micro_batch=2", "checkpoint.every=7", "model.attention=local",
                        "init.checkpoint=/some/parent", "train.stop_at_step=5"):  # fmt: skip
        assert config_hash(run(operational)) == base, operational
    for semantic in ("optim.lr=1e-3", "train.steps=300", "seed=7", "model.hidden_size=128",
                     "data.cluster=1", "role.arm=trunk", "train.global_batch=32"):  # fmt: skip
        assert config_hash(run(semantic)) != base, semantic


def test_a_diff_names_each_changed_field_with_both_values():
    assert config_diff(run(), run("optim.lr=1e-3", "train.log_every=1", "seed=9")) == [
        "optim.lr: 0.003 -> 0.001",
        "seed: 1234 -> 9",
    ]


def test_a_field_the_saved_config_predates_counts_at_its_default():
    saved = run()
    del saved["data"]["heldout_seed"]
    assert config_diff(saved, run(), defaults=run()) == []
    assert config_diff(saved, run("data.heldout_seed=5"), defaults=run()) == [
        "data.heldout_seed: 1234 -> 5"
    ]


def test_shards_compare_by_the_files_they_resolve_to(tmp_path, monkeypatch):
    """A run started on ``shards/a`` resumes on its absolute path or through a symlink."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.bin").touch()
    (tmp_path / "linked").symlink_to(tmp_path / "shards")
    config = Path("configs/tiny.yaml").resolve()
    monkeypatch.chdir(tmp_path)

    def on(shard: object) -> dict:
        return asdict(load_config(RunConfig, config, [f"data.paths=[{shard}]"], inputs=False))

    saved = on("shards/a")
    for same in ("shards/a", tmp_path / "shards" / "a", "linked/a", "shards/a.bin"):
        assert config_diff(saved, on(same)) == [], same
    assert config_diff(saved, on("shards/b")) == ["data.paths: ['shards/a'] -> ['shards/b']"]


def test_law_coordinates_of_each_arm():
    assert law_coordinates("trunk", 1000, None) == {"D": 1000, "D_prime": 0}
    assert law_coordinates("specialist", 200, 1000) == {"D": 1000, "D_prime": 200}
    assert law_coordinates("specialist", 200, None) == {"D": 0, "D_prime": 200}  # from scratch
    assert law_coordinates("standard", 800, 1000) == {"D": 1800, "D_prime": 0}
    assert law_coordinates("standard_per_model", 200, 1000) == {"D": 1200, "D_prime": 0}


def test_code_version_names_the_package_version_and_its_commit():
    version = code_version()
    assert version.startswith("0.1.0")
    assert "+g" in version  # this checkout is a git repository


def test_a_role_names_its_cluster_only_for_a_specialist():
    with pytest.raises(ConfigError, match="a specialist names its cluster"):
        run("role.arm=specialist")
    with pytest.raises(ConfigError, match="a specialist names its cluster"):
        run("role.arm=standard", "role.cluster=1")


@pytest.mark.parametrize(
    ("every", "keep_last", "keep_steps", "steps", "kept"),
    [(0, 3, [], 10, [10]), (2, 2, [], 10, [8, 10]), (4, 1, [3, 5], 10, [3, 5, 10]),
     (5, 3, [5], 10, [5, 10]), (3, 2, [], 10, [9, 10])],
)  # fmt: skip
def test_the_checkpoints_a_run_keeps(every, keep_last, keep_steps, steps, kept):
    config = CheckpointConfig(every=every, keep_last=keep_last, keep_steps=keep_steps)
    assert config.kept_steps(steps) == kept
