"""Train/validation data configs over indexed shards."""

import logging

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_split import train_cli
from megatron_split.config import load_config
from megatron_split.data.synthetic import write_synthetic_shard
from megatron_split.train.config import RunConfig
from tests.megatron_split.runs import tiny_overrides


@pytest.mark.parametrize("suffix", ["", ".bin", ".idx"])
def test_a_shard_is_named_by_its_prefix_or_one_of_its_files(shards, suffix):
    cfg = load_config(RunConfig, None, [f"data.paths=[{shards[0]}{suffix}]"])
    assert cfg.data.paths == [shards[0]]


def test_a_run_that_repeats_its_data_says_how_often(shards, tmp_path, caplog):
    small = write_synthetic_shard(tmp_path / "small", n_docs=10, doc_length=(40, 60))
    tokens = sum(len(doc) for doc in IndexedDataset(small))
    run = tiny_overrides(tmp_path / "run", [small], **{"train.steps": 2, "data.split": "100,0,0"})
    with caplog.at_level(logging.WARNING, logger="megatron_split.train.loop"):
        assert train_cli.main(run) == 0
    (warning,) = [m for m in caplog.messages if m.startswith("data:")]
    passes = 2 * 8 * 64 / tokens
    assert warning.startswith(f"data: 2 steps of 8 x 64 tokens read the training split of {small}")
    assert f" {passes:.1f} times;" in warning


def test_a_run_within_its_data_has_no_such_warning(shards, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="megatron_split.train.loop"):
        assert train_cli.main(tiny_overrides(tmp_path, shards, **{"train.steps": 2})) == 0
    assert not [m for m in caplog.messages if m.startswith("data:")]
