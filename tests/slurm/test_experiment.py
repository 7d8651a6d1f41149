"""A split experiment as a graph of Slurm jobs: trunk -> branch arrays -> evaluations."""

import json
import os
import time

import pytest

from megatron_split.config import ConfigError, load_config
from slurm.experiment import ExperimentConfig, plan, status, still_queued, submit
from slurm.launch import slurm_available

pytestmark = pytest.mark.slow

TINY = ["model.seq_length=64", "train.global_batch=8", "train.micro_batch=4",
        "train.log_every=2", "train.eval_batches=1", "train.progress=false",
        "train.tensorboard=false", "checkpoint.every=0"]  # fmt: skip


def experiment(demo_family, out, split_steps="[6,12]") -> ExperimentConfig:
    trunk = [*TINY, "train.steps=12", "optim.schedule.warmup_steps=2", "checkpoint.keep_last=1"]
    overrides = [
        f"out={out}", f"clusters={demo_family / 'clusters'}", "config=configs/tiny.yaml",
        f"split_steps={split_steps}", f"trunk.overrides={json.dumps(trunk)}",
        "branches.steps=4", f"branches.overrides={json.dumps(TINY)}", "eval.heldout_samples=8",
    ]  # fmt: skip
    return load_config(ExperimentConfig, "configs/experiment_tiny.yaml", overrides)


def test_plan_is_trunk_then_a_branch_array_and_an_eval_per_split(demo_family, tmp_path):
    jobs = plan(experiment(demo_family, tmp_path))
    assert [(j.name, j.after, len(j.argvs)) for j in jobs] == [
        ("trunk", [], 1),
        ("split_6/branches", ["trunk"], 2),
        ("split_6/eval", ["split_6/branches"], 1),
        ("split_12/branches", ["trunk"], 2),
        ("split_12/eval", ["split_12/branches"], 1),
    ]
    assert jobs[0].argvs[0][-1] == "checkpoint.keep_steps=[6, 12]"
    branch = jobs[1].argvs[1]
    assert f"init.checkpoint={tmp_path}/trunk/checkpoints/step_0000006" in branch
    assert f"run_dir={tmp_path}/split_6/cluster_1" in branch
    assert not any(job.done for job in jobs)
    with pytest.raises(ConfigError, match=r"split_steps \[6, 13\] must lie in 1..12"):
        plan(experiment(demo_family, tmp_path, "[6,13]"))


@pytest.mark.parametrize(
    ("name", "jobs"), [("experiment_tiny", 5), ("ladder_tiny", 4 * 7 + 1), ("ladder_gpu", 29)]
)
def test_shipped_experiments_plan(demo_family, tmp_path, name, jobs):
    overrides = [f"clusters={demo_family / 'clusters'}", f"out={tmp_path}"]
    planned = plan(load_config(ExperimentConfig, f"configs/{name}.yaml", overrides))
    assert len(planned) == jobs
    assert planned[-1].kind == ("eval" if name == "experiment_tiny" else "laws")


def test_split_fractions_follow_each_rungs_own_trunk_length(demo_family, tmp_path):
    cfg = experiment(demo_family, tmp_path, "[]")
    cfg.split_fractions = [0.5, 1.0]
    cfg.ladder = {"short": ["train.steps=8"], "long": []}  # a rung's steps beat the stage's
    evals = [job.name for job in plan(cfg) if job.kind == "eval"]
    assert evals == ["short/split_4/eval", "short/split_8/eval",
                     "long/split_6/eval", "long/split_12/eval"]  # fmt: skip
    cfg.split_steps = [6]
    with pytest.raises(ConfigError, match="not both"):
        plan(cfg)
    cfg.split_steps, cfg.split_fractions = [], [0.5, 1.5]
    with pytest.raises(ConfigError, match=r"must lie in \(0, 1\]"):
        plan(cfg)


@pytest.mark.slurm
def test_submitted_graph_runs_in_order_and_is_never_submitted_twice(demo_family, tmp_path):
    if not slurm_available():
        if os.environ.get("MSPLIT_REQUIRE_SLURM"):
            pytest.fail("MSPLIT_REQUIRE_SLURM is set but no Slurm controller answers")
        pytest.skip("no Slurm cluster (start one with slurm/local_cluster.sh start)")
    cfg = experiment(demo_family, tmp_path)
    ids = submit(cfg)
    assert list(ids) == ["trunk", "split_6/branches", "split_6/eval",
                         "split_12/branches", "split_12/eval"]  # fmt: skip
    assert submit(cfg) == {}  # all still queued or running: nothing submitted twice
    trunk = status(cfg)[0]
    assert trunk["slurm_id"] == ids["trunk"] and trunk["state"] in ("PENDING", "RUNNING")
    deadline = time.monotonic() + 600
    while any(still_queued(job_id) for job_id in ids.values()):
        assert time.monotonic() < deadline, "the experiment did not finish in 10 minutes"
        time.sleep(2)
    for split in (6, 12):
        for cluster in (0, 1):
            meta = json.loads(
                (tmp_path / f"split_{split}" / f"cluster_{cluster}" / "checkpoints"
                 / "step_0000004" / "meta.json").read_text()
            )  # fmt: skip
            assert meta["lineage"]["parent_step"] == split
        rows = (tmp_path / f"split_{split}" / "eval" / "results.jsonl").read_text().splitlines()
        assert {json.loads(r)["model"] for r in rows} >= {"trunk", "branch_0", "routed"}
    # the split point survived the trunk's pruning (keep_last=1)
    assert (tmp_path / "trunk" / "checkpoints" / "step_0000006").is_dir()
    assert all(row["done"] == "yes" for row in status(cfg))
    assert submit(cfg) == {}  # complete: nothing to submit


def test_a_ladder_repeats_the_graph_per_rung_with_its_overrides(demo_family, tmp_path):
    cfg = experiment(demo_family, tmp_path, "[12]")
    cfg.ladder = {"h64": ["model.hidden_size=64"], "h96": ["model.hidden_size=96"]}
    jobs = plan(cfg)
    assert [j.name for j in jobs] == [
        "h64/trunk", "h64/split_12/branches", "h64/split_12/eval",
        "h96/trunk", "h96/split_12/branches", "h96/split_12/eval", "laws",
    ]  # fmt: skip
    assert jobs[4].after == ["h96/trunk"]
    assert jobs[6].after == ["h64/split_12/eval", "h96/split_12/eval"]  # the law: after all
    cfg.laws.holdout = "largest-n"  # a typo fails now, not after the whole ladder has run
    with pytest.raises(ConfigError, match="laws.holdout='largest-n'"):
        plan(cfg)
    for trunk, branches in ((jobs[0], jobs[1]), (jobs[3], jobs[4])):
        size = trunk.name.split("/")[0].removeprefix("h")
        assert f"model.hidden_size={size}" in trunk.argvs[0]
        assert all(f"model.hidden_size={size}" in argv for argv in branches.argvs)
        assert f"run_dir={tmp_path}/h{size}/trunk" in trunk.argvs[0]


def test_without_slurm_a_ladder_runs_stage_by_stage_and_ends_with_a_fitted_law(
    demo_family, tmp_path
):
    cfg = experiment(demo_family, tmp_path, "[6,12]")
    cfg.ladder = {"h32": ["model.hidden_size=32", "model.num_attention_heads=2",
                          "model.num_query_groups=1"], "h64": []}  # fmt: skip
    for stage in (cfg.trunk, cfg.branches, cfg.eval, cfg.laws):
        stage.slurm.cluster = "local"
    cfg.branches.overrides.append("checkpoint.every=2")  # branches saved at steps 2 and 4
    cfg.eval.branch_history = True
    cfg.laws.form, cfg.laws.holdout = "chinchilla_total", "none"  # two sizes: no extrapolation
    names = [
        f"{rung}/{job}"
        for rung in ("h32", "h64")
        for job in (
            "trunk",
            "split_6/branches",
            "split_6/eval",
            "split_12/branches",
            "split_12/eval",
        )
    ]
    assert list(submit(cfg)) == [*names, "laws"]  # fmt: skip
    rows = status(cfg)
    assert all(row["done"] == "yes" for row in rows)
    assert rows[-1]["progress"].startswith("chinchilla_total: R^2 ")  # the law, in brief
    lines = (tmp_path / "h64" / "split_12" / "eval" / "law_points.jsonl").read_text()
    points = [json.loads(line) for line in lines.splitlines()]
    # the trunk on each of 2 clusters, each specialist on its own at steps 2 and 4
    tokens_per_step = 8 * 64
    assert sorted((p["domain"], p["D_prime"]) for p in points) == [
        ("cluster_0", 0), ("cluster_0", 2 * tokens_per_step), ("cluster_0", 4 * tokens_per_step),
        ("cluster_1", 0), ("cluster_1", 2 * tokens_per_step), ("cluster_1", 4 * tokens_per_step),
    ]  # fmt: skip
    # The law is fitted to every evaluation's points: 2 sizes x 2 split points x 6
    fit = json.loads((tmp_path / "laws" / "fit.json").read_text())
    assert fit["form"] == "chinchilla_total" and fit["n_points"] == 24
    assert fit["domains"] == ["cluster_0", "cluster_1"] and "E[cluster_0]" in fit["params"]
    assert "D_split" in (tmp_path / "laws" / "report" / "report.md").read_text()
    assert submit(cfg) == {}  # complete: nothing submitted again
