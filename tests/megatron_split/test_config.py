from pathlib import Path

import pytest

from megatron_split.config import ConfigError, load_config
from megatron_split.train.config import RunConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides(tmp_path, shards):
    path = write(tmp_path, f"data:\n  paths: [{shards[0]}]\noptim:\n  lr: 1e-3\n")
    cfg = load_config(RunConfig, path, ["optim.lr=3e-4", "model.num_query_groups=2"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.num_query_groups == 2
    assert cfg.data.paths == [shards[0]]


def test_yaml_string_floats_are_numbers(tmp_path, shards):
    # YAML 1.1 reads "3e-4" as a string; configs must not care.
    cfg = load_config(
        RunConfig, write(tmp_path, f"data: {{paths: [{shards[0]}]}}\noptim: {{lr: 3e-4}}\n")
    )
    assert isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown key optim.lrr"),
        (["train.steps=many"], "train.steps: expected int"),
        (["model.position_embedding=alibi"], "model.position_embedding: 'alibi' is not one of"),
        (
            ["model.hidden_size=66"],
            "hidden_size=66 is not divisible by model.num_attention_heads=4",
        ),
        (["parallel.tensor=3"], "must be divisible by parallel.tensor=3"),
        (
            ["model.num_layers=3", "parallel.pipeline=2"],
            "num_layers=3 is not divisible by parallel.pipeline=2",
        ),
        (["data.paths=[/nonexistent/shard]"], "/nonexistent/shard.bin does not exist"),
        (
            ["train.global_batch=10", "train.micro_batch=4"],
            "global_batch=10 is not divisible by train.micro_batch=4",
        ),
        (["optim.schedule.warmup_steps=500"], "warmup_steps=500 must be in [0, train.steps=100]"),
        (["train.stop_at_step=101"], "train.stop_at_step must be in 1..train.steps=100"),
        (["noequals"], "expected dotted.key=value"),
    ],
)
def test_config_errors_name_the_field(tmp_path, shards, overrides, message):
    path = write(tmp_path, f"data:\n  paths: [{shards[0]}]\n")
    with pytest.raises(ConfigError) as err:
        cfg = load_config(RunConfig, path, overrides)
        cfg.validate(world_size=1)
    assert message in str(err.value)


def test_global_batch_checked_against_data_parallel_size(shards):
    cfg = load_config(
        RunConfig,
        None,
        [f"data.paths=[{shards[0]}]", "train.global_batch=8", "train.micro_batch=4"],
    )
    cfg.validate(world_size=2)  # DP=2: 8 = 4 x 2
    with pytest.raises(ConfigError, match="data-parallel size 4"):
        cfg.validate(world_size=4)
    with pytest.raises(ConfigError, match="world size 3 is not divisible"):
        load_config(RunConfig, None, [f"data.paths=[{shards[0]}]", "parallel.tensor=2"]).validate(3)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(RunConfig, write(tmp_path, "model: [unclosed\n"))


def test_a_shard_too_small_for_a_validation_split_is_refused(tmp_path, shards):
    from megatron_split.data.synthetic import write_synthetic_shard

    tiny = write_synthetic_shard(tmp_path / "tiny", n_docs=10)
    with pytest.raises(ConfigError, match=r"holds out no document of .*tiny \(10 documents\)"):
        load_config(RunConfig, None, [f"data.paths=[{shards[0]},{tiny}]"])
    load_config(RunConfig, None, [f"data.paths=[{tiny}]", "data.split=80,20,0"])  # 2 held out
