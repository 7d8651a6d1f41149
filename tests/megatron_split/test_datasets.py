"""Train/validation data configs over indexed shards."""

import pytest

from megatron_split.config import load_config
from megatron_split.train.config import RunConfig


@pytest.mark.parametrize("suffix", ["", ".bin", ".idx"])
def test_a_shard_is_named_by_its_prefix_or_one_of_its_files(shards, suffix):
    cfg = load_config(RunConfig, None, [f"data.paths=[{shards[0]}{suffix}]"])
    assert cfg.data.paths == [shards[0]]
