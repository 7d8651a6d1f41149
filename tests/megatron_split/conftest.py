import pytest

from megatron_split.data.synthetic import write_synthetic_shard


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> list[str]:
    """Two real indexed shards (a learnable bigram process each), shared by the session."""
    root = tmp_path_factory.mktemp("shards")
    return [write_synthetic_shard(root / "a", seed=0), write_synthetic_shard(root / "b", seed=1)]
