from dataclasses import dataclass
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
        (["train.eval_every=-1"], "train.eval_every must be >= 0, got -1"),
        (["train.eval_batches=0"], "train.eval_batches must be >= 1, got 0"),
        (["train.log_every=0"], "train.log_every must be >= 1, got 0"),
        (["train.micro_batch=0"], "train.micro_batch must be >= 1, got 0"),
        (["train.peak_flops_per_device=-1"], "train.peak_flops_per_device must be > 0"),
        (["noequals"], "expected dotted.key=value"),
    ],
)
def test_config_errors_name_the_field(tmp_path, shards, overrides, message):
    path = write(tmp_path, f"data:\n  paths: [{shards[0]}]\n")
    with pytest.raises(ConfigError) as err:
        cfg = load_config(RunConfig, path, overrides)
        cfg.validate(world_size=1)
    assert message in str(err.value)


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_a_run_dir_on_a_file_is_refused(tmp_path, shards, below):
    (tmp_path / "file").touch()
    run_dir = tmp_path / "file" / below
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, [f"data.paths=[{shards[0]}]", f"run_dir={run_dir}"])
    assert f"run_dir={run_dir}: {tmp_path}/file is a file, not a directory" in str(err.value)


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
    with pytest.raises(ConfigError, match=r"override 'optim.lr=\[1': the value is not valid"):
        load_config(RunConfig, None, ["optim.lr=[1"])


def test_a_key_written_twice_is_refused(tmp_path):
    # YAML keeps the second block silently: optim.lr would be lost
    text = "optim:\n  lr: 7e-4\ntrain:\n  steps: 5\noptim:\n  weight_decay: 0.0\n"
    with pytest.raises(ConfigError, match=r"run.yaml: line 5: key 'optim' is already set on line"):
        load_config(RunConfig, write(tmp_path, text))


@dataclass
class _Job:
    nodes: int = 1
    partition: str | None = None


@dataclass
class _Stages:
    trunk: _Job
    branches: _Job


def test_a_block_named_once_merges_into_others_and_a_key_beside_it_wins(tmp_path):
    # YAML's merge key: a site's settings written once (&site), merged where asked
    text = "trunk: &site {partition: gpu, nodes: 4}\nbranches: {<<: *site, nodes: 1}\n"
    cfg = load_config(_Stages, write(tmp_path, text))
    assert cfg.trunk == _Job(nodes=4, partition="gpu")
    assert cfg.branches == _Job(nodes=1, partition="gpu")
    twice = text.replace("nodes: 1", "nodes: 1, nodes: 2")
    with pytest.raises(ConfigError, match="line 2: key 'nodes' is already set on line 2"):
        load_config(_Stages, write(tmp_path, twice))


def test_an_error_names_the_override_that_made_it(tmp_path, shards):
    path = write(tmp_path, f"data:\n  paths: [{shards[0]}]\n")
    with pytest.raises(ConfigError, match=r"^override train.steps=0: train.steps must be"):
        load_config(RunConfig, path, ["optim.lr=1e-3", "train.steps=0"]).validate(world_size=1)
    with pytest.raises(ConfigError, match=r"^override optim.lrr=1: unknown key optim.lrr"):
        load_config(RunConfig, path, ["optim.lrr=1"])
    # a field no override touched is the file's
    bad = write(tmp_path, f"data:\n  paths: [{shards[0]}]\ntrain:\n  steps: 0\n")
    with pytest.raises(ConfigError, match=r"run.yaml: train.steps must be"):
        load_config(RunConfig, bad, ["optim.lr=1e-3"]).validate(world_size=1)


def test_a_missing_required_key_is_named(tmp_path):
    @dataclass
    class Experiment:
        out: str
        config: str
        seed: int = 0

    with pytest.raises(ConfigError, match=r"run.yaml: missing key out, config: Experiment has"):
        load_config(Experiment, write(tmp_path, ""))


def test_a_shard_too_small_for_a_validation_split_is_refused(tmp_path, shards):
    from megatron_split.data.synthetic import write_synthetic_shard

    tiny = write_synthetic_shard(tmp_path / "tiny", n_docs=10)
    with pytest.raises(ConfigError, match=r"holds out no document of .*tiny \(10 documents\)"):
        load_config(RunConfig, None, [f"data.paths=[{shards[0]},{tiny}]"])
    load_config(RunConfig, None, [f"data.paths=[{tiny}]", "data.split=80,20,0"])  # 2 held out
