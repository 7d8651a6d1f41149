"""The experiment graph: its plan, budgets in tokens, seeds, the standard arm, and runs of it
on this machine (interrupted and resumed) and on a real Slurm."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.cli import main as data_cli
from data_prep.plan import PARTITIONS_PER_WORKER
from megatron_split.config import ConfigError, load_config
from megatron_split.optim.schedule import lr_at
from megatron_split.train.config import RunConfig
from slurm.cli import main as experiment_cli
from slurm.cli import plan_table
from slurm.executors import cancel_slurm, run_local, slurm_state, submit_slurm
from slurm.experiment import DataStage, ExperimentConfig, Rung, build_graph, derive_seed
from slurm.graph import Graph
from slurm.launch import SlurmConfig
from slurm.status import sacct_records, status_table
from tests.megatron_split.runs import metrics
from tests.slurm.cluster import need_slurm

pytestmark = pytest.mark.slow

TOKENS_PER_STEP = 8 * 64  # train.global_batch x model.seq_length below
TINY = ["model.seq_length=64", "train.global_batch=8", "train.micro_batch=4",
        "train.log_every=1", "train.eval_batches=1", "train.progress=false",
        "train.tensorboard=false", "checkpoint.every=0"]  # fmt: skip


def experiment(demo_family, out, *overrides: str) -> ExperimentConfig:
    base = [
        f"out={out}", f"clusters={demo_family / 'clusters'}", "config=configs/tiny.yaml",
        f"overrides={json.dumps(TINY)}",
        f"split_tokens=[{6 * TOKENS_PER_STEP},{12 * TOKENS_PER_STEP}]",
        f"trunk.tokens={12 * TOKENS_PER_STEP}",
        'trunk.overrides=["optim.schedule.warmup_steps=2","checkpoint.keep_last=1"]',
        f"branches.tokens={4 * TOKENS_PER_STEP}", "eval.heldout_samples=8",
    ]  # fmt: skip
    return load_config(ExperimentConfig, "configs/experiment_tiny.yaml", [*base, *overrides])


def resolved(task) -> RunConfig:
    return load_config(RunConfig, task.argv[0], task.argv[1:], inputs=False)


def test_the_graph_of_one_experiment(demo_family, tmp_path):
    graph = build_graph(experiment(demo_family, tmp_path))
    assert [(node.name, node.after, len(node.tasks)) for node in graph] == [
        ("trunk/step_6", [], 1),
        ("trunk/step_12", ["trunk/step_6"], 1),
        ("split_6/branches", ["trunk/step_6"], 2),
        ("split_6/standard", ["trunk/step_6"], 1),
        ("split_6/eval", ["split_6/branches", "split_6/standard"], 1),
        ("split_12/branches", ["trunk/step_12"], 2),
        ("split_12/standard", ["trunk/step_12"], 1),
        ("split_12/eval", ["split_12/branches", "split_12/standard"], 1),
        ("results", ["split_6/eval", "split_12/eval"], 1),
        ("report", ["results"], 1),
    ]
    # One trunk run in two segments, each ending at a split point: the first split point's
    # family trains while the trunk goes on.
    segments = [graph[f"trunk/step_{end}"].tasks[0] for end in (6, 12)]
    for (start, end), task in zip([(0, 6), (6, 12)], segments, strict=True):
        trunk = resolved(task)
        assert (trunk.train.steps, trunk.train.stop_at_step) == (12, end)
        assert trunk.checkpoint.keep_steps == [6, 12] and trunk.run_dir == str(tmp_path / "trunk")
        assert trunk.optim.schedule.kind == "constant" and trunk.role.arm == "trunk"
        assert (task.steps, task.tokens) == (end, (end - start) * TOKENS_PER_STEP)
    branch = resolved(graph["split_6/branches"].tasks[1])
    assert branch.init.checkpoint == str(tmp_path / "trunk" / "checkpoints" / "step_0000006")
    assert (branch.data.cluster, branch.role.arm, branch.role.cluster) == (1, "specialist", 1)
    assert branch.run_dir == str(tmp_path / "split_6" / "cluster_1")
    assert not any(node.done for node in graph)


def test_the_standard_arm_trains_k_times_d_prime_with_the_branches_schedule(demo_family, tmp_path):
    graph = build_graph(experiment(demo_family, tmp_path, "standard.per_model=true"))
    branch_task = graph["split_6/branches"].tasks[0]
    standard_task, per_model_task = graph["split_6/standard"].tasks
    k = len(graph["split_6/branches"].tasks)
    assert standard_task.tokens == k * branch_task.tokens == k * 4 * TOKENS_PER_STEP
    assert per_model_task.tokens == branch_task.tokens
    branch, standard, per_model = map(resolved, (branch_task, standard_task, per_model_task))
    assert standard.data.cluster is None and standard.role.arm == "standard"
    assert per_model.role.arm == "standard_per_model"
    # standard pretraining: the trunk's batch, k times the branches' steps
    assert standard.train.global_batch == branch.train.global_batch == per_model.train.global_batch
    assert (standard.train.steps, per_model.train.steps) == (k * 4, 4)
    for run in (branch, standard, per_model):  # on from the trunk's LR and optimizer, decayed
        assert run.optim.schedule.kind == "wsd" and run.optim.schedule.warmup_steps == 0
        assert run.init.load_optimizer and run.init.checkpoint == branch.init.checkpoint

    def lrs(run: RunConfig) -> list[float]:
        return [lr_at(s, run.optim.lr, run.train.steps, run.optim.schedule)
                for s in range(run.train.steps)]  # fmt: skip

    assert lrs(branch) == lrs(per_model) and lrs(branch)[-1] < lrs(branch)[0]
    assert lrs(standard)[k - 1 :: k] == pytest.approx(lrs(branch))  # at every equal compute
    # or, asked for, the branches' very steps at k times their batch: the same LR each step
    graph = build_graph(experiment(demo_family, tmp_path, "standard.same_batch=false"))
    (big_batch,) = graph["split_6/standard"].tasks
    run = resolved(big_batch)
    assert big_batch.tokens == standard_task.tokens and run.train.steps == 4
    assert run.train.global_batch == k * branch.train.global_batch
    assert lrs(run) == lrs(branch)


def test_budgets_are_tokens_in_whole_steps(demo_family, tmp_path):
    with pytest.raises(ConfigError, match=r"trunk.tokens=1000 is not a positive multiple of the "
                       r"512 tokens of a step .*use 512 or 1024"):  # fmt: skip
        build_graph(experiment(demo_family, tmp_path, "trunk.tokens=1000"))
    with pytest.raises(ConfigError, match=r"split_tokens\[1\]=3100 is not a positive multiple"):
        build_graph(experiment(demo_family, tmp_path, "split_tokens=[3072,3100]"))
    with pytest.raises(ConfigError, match=r"branches.tokens=100 is not"):
        build_graph(experiment(demo_family, tmp_path, "branches.tokens=100"))
    with pytest.raises(ConfigError, match=r"split_fractions\[0\]: 1843.2 tokens is not a trunk"):
        build_graph(experiment(demo_family, tmp_path, "split_tokens=[]", "split_fractions=[0.3]"))
    with pytest.raises(ConfigError, match=r"split_tokens\[0\]: 7168 tokens is not a trunk step"):
        build_graph(experiment(demo_family, tmp_path, "split_tokens=[7168]"))
    with pytest.raises(
        ConfigError, match=r"trunk.overrides: train.steps=5 is set by the experiment"
    ):
        experiment(demo_family, tmp_path, 'trunk.overrides=["train.steps=5"]')
    with pytest.raises(ConfigError, match="give data .* or clusters"):
        experiment(demo_family, tmp_path, "data={}")
    graph = build_graph(experiment(demo_family, tmp_path, "split_tokens=[]",
                                   "split_fractions=[0.5,1.0]"))  # fmt: skip
    assert [n.name for n in graph if n.name.endswith("eval")] == ["split_6/eval", "split_12/eval"]


def test_a_budget_below_one_step_and_no_clusters_are_named(demo_family, tmp_path):
    with pytest.raises(ConfigError, match=r"trunk.tokens=100 .*use 512 \(one step\) or a multi"):
        build_graph(experiment(demo_family, tmp_path, "trunk.tokens=100"))
    with pytest.raises(ConfigError, match=r"^override data.k=0: data.k must be >= 1, got 0"):
        load_config(ExperimentConfig, "configs/demo.yaml", [f"out={tmp_path}", "data.k=0"])


def test_the_base_config_and_out_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match=r"config=nope.yaml: no such file \(a relative path"):
        load_config(ExperimentConfig, "configs/demo.yaml", [f"out={tmp_path}", "config=nope.yaml"])
    (tmp_path / "file").touch()
    with pytest.raises(ConfigError, match=r"^override out=\S+: a file, not a directory"):
        load_config(ExperimentConfig, "configs/demo.yaml", [f"out={tmp_path / 'file'}"])


def test_each_action_takes_its_own_options_among_the_overrides(tmp_path, capsys):
    plan = ["plan", "configs/demo.yaml", "--tokens-per-s", "1e5", f"out={tmp_path}", "data.k=3"]
    assert experiment_cli(plan) == 0
    assert "per arm:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        experiment_cli(["run", "configs/demo.yaml", "--dry-run", str(tmp_path / "scripts")])
    assert "unrecognized arguments: --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "scripts").exists()


def test_the_plan_times_each_job_from_its_flops_and_devices_and_warns_of_short_limits(
    demo_family, tmp_path
):
    job = {
        "gpus_per_node": 2,
        "tasks_per_node": 2,
        "timeout_min": 1,
        "max_requeues": 0,
        "signal_delay_s": 30,
    }
    graph = build_graph(experiment(demo_family, tmp_path, f"trunk.slurm={json.dumps(job)}"))
    segment = graph["trunk/step_6"].trainings[0]
    per_gpu = segment.flops / (2 * 120)  # the segment's 2 GPUs take 2 minutes
    table = plan_table(graph, flops_per_device=per_gpu)
    row = next(line for line in table.splitlines() if line.startswith("trunk/step_6 "))
    assert row.split()[2:5] == ["1x2", "GPU", "1m00s"]  # the job and its limit
    assert row.split()[-2:] == ["2m00s", "0.1"]  # 2 GPUs x 2 minutes
    assert ("warning: trunk/step_6: about 2m00s of training, more than trunk.slurm allows "
            "(1 min x 1 tries): raise timeout_min or max_requeues") in table  # fmt: skip
    assert "training time on the longest chain of jobs: " in table
    # one throughput for every job instead: the same time for the same tokens
    assert plan_table(graph, tokens_per_s=segment.tokens / 60).count(" 1m00s ") >= 2


def test_every_run_has_its_own_seed_and_seeds_repeat_the_experiment(demo_family, tmp_path):
    graph = build_graph(experiment(demo_family, tmp_path, "seeds=[7,8]"))
    names = [node.name for node in graph]
    assert names[:3] == ["seed_7/trunk/step_6", "seed_7/trunk/step_12", "seed_7/split_6/branches"]
    assert "seed_8/trunk/step_6" in names
    seeds = {}
    for node in graph:
        for task in node.trainings:
            run = resolved(task)
            assert run.data.seed == run.seed
            seeds[run.run_dir] = run.seed
    assert seeds[str(tmp_path / "seed_7" / "trunk")] == 7
    assert seeds[str(tmp_path / "seed_8" / "split_6" / "cluster_1")] == derive_seed(
        8, 6 * TOKENS_PER_STEP, "cluster_1"
    )
    assert len(set(seeds.values())) == len(seeds)  # no two runs share a seed


@pytest.mark.parametrize(
    ("name", "nodes"),
    # data + trunk segments (one per split point) + 3 per split point + summary
    [("demo", 5 + 1 + 3 + 2), ("experiment_tiny", 2 + 2 * 3 + 2),
     ("repro_small", 5 + 5 * (4 + 4 * 3) + 4), ("ladder_gpu", 4 * (3 + 3 * 3) + 4),
     ("phonebook", 3 * (5 + 3 * (5 + 2 * (4 * 2 + 1))) + 2)],
)  # fmt: skip
def test_shipped_experiments_plan(demo_family, tmp_path, name, nodes):
    overrides = [f"out={tmp_path}"]
    if name in ("experiment_tiny", "ladder_gpu"):
        overrides.append(f"clusters={demo_family / 'clusters'}")
    graph = build_graph(load_config(ExperimentConfig, f"configs/{name}.yaml", overrides))
    assert len(graph.nodes) == nodes
    assert graph.nodes[-1].name == "report"
    table = plan_table(graph, tokens_per_s=1e4)
    assert "per arm:" in table and "standard" in table and "checkpoints kept:" in table


def test_the_embeddings_job_can_ask_for_its_own_resources(tmp_path):
    gpu = SlurmConfig(gpus_per_node=1, partition="gpu")
    nodes = DataStage(embedder="minilm", embed_slurm=gpu).nodes(tmp_path)
    assert {n.name: n.slurm for n in nodes} == {
        "corpus": SlurmConfig(), "tokenizer": SlurmConfig(), "shards": SlurmConfig(),
        "embeddings": gpu, "clusters": SlurmConfig()}  # fmt: skip


def test_the_embeddings_read_the_embedders_default_tokens_unless_pinned(tmp_path):
    def embed_argv(stage: DataStage) -> list[str]:
        return next(n for n in stage.nodes(tmp_path) if n.name == "embeddings").tasks[0].argv

    assert "--max-tokens" not in embed_argv(DataStage())  # `msplit data embed` decides
    pinned = load_config(ExperimentConfig, "configs/repro_small.yaml", [f"out={tmp_path}"]).data
    argv = embed_argv(pinned)  # as the committed reproduction was embedded
    assert argv[argv.index("--max-tokens") + 1] == "256"


def test_a_ladder_repeats_the_trunk_and_its_splits_per_rung_and_ends_with_the_law(
    demo_family, tmp_path
):
    cfg = experiment(demo_family, tmp_path, f"split_tokens=[{12 * TOKENS_PER_STEP}]")
    cfg.ladder = {"h32": Rung(["model.hidden_size=32"]), "h64": Rung(trunk_tokens=3072)}
    with pytest.raises(ConfigError, match=r"split_tokens\[0\]: 6144 tokens is not a trunk step "
                       r"in 1..3072"):  # fmt: skip
        build_graph(cfg)
    cfg.split_tokens, cfg.split_fractions = [], [1.0]
    graph = build_graph(cfg)
    assert [node.name for node in graph][-4:] == ["results", "laws/fit", "laws/report", "report"]
    assert graph["h64/split_6/branches"].after == ["h64/trunk"]  # one segment: the trunk
    assert graph["results"].after == ["h32/split_12/eval", "h64/split_6/eval"]
    assert resolved(graph["h32/trunk"].tasks[0]).model.hidden_size == 32
    assert all(resolved(t).model.hidden_size == 32 for t in graph["h32/split_12/branches"].tasks)
    cfg.laws.holdout = "largest-n"  # a typo fails now, not after the whole ladder has run
    with pytest.raises(ConfigError, match="laws.holdout='largest-n'"):
        cfg.validate()


def _final_losses(out) -> dict[str, float]:
    losses = {}
    for path in sorted(out.rglob("metrics.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        losses[str(path.parent.relative_to(out))] = [r["loss"] for r in records if "loss" in r]
    return losses


def _ladder(demo_family, out) -> list[str]:
    ladder = (
        'ladder={"h32": {"overrides": ["model.hidden_size=32", '
        '"model.num_attention_heads=2", "model.num_query_groups=1"]}, "h64": {}}'
    )
    return ["msplit", "experiment", "run", "configs/experiment_tiny.yaml",
            *experiment_args(demo_family, out), ladder,
            f"split_tokens=[{4 * TOKENS_PER_STEP},{8 * TOKENS_PER_STEP}]",
            f"trunk.tokens={8 * TOKENS_PER_STEP}", f"branches.tokens={4 * TOKENS_PER_STEP}",
            'branches.overrides=["checkpoint.every=1"]', "standard.per_model=true",
            "laws.form=chinchilla_total", "laws.holdout=none"]  # fmt: skip


def experiment_args(demo_family, out) -> list[str]:
    return [f"out={out}", f"clusters={demo_family / 'clusters'}", "config=configs/tiny.yaml",
            f"overrides={json.dumps(TINY)}", "eval.heldout_samples=8",
            'trunk.overrides=["optim.schedule.warmup_steps=2"]']  # fmt: skip


def _cli(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "megatron_split.cli", *argv[1:]]


def test_the_graph_runs_here_from_trunk_to_law_and_resumes_after_a_kill(demo_family, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    done = subprocess.run(_cli(_ladder(demo_family, reference)), capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    # Killed in the middle of a branch: the rerun resumes only what is not complete.
    proc = subprocess.Popen(_cli(_ladder(demo_family, killed)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    branch = killed / "h64" / "split_8" / "cluster_1" / "checkpoints" / "step_0000002"
    deadline = time.monotonic() + 600
    while not (branch / "meta.json").is_file():
        assert proc.poll() is None, proc.stderr.read()[-4000:]
        assert time.monotonic() < deadline, "the branch never saved its step 2"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(_cli(_ladder(demo_family, killed)), capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "h32/trunk/step_4: running" not in rerun.stderr  # complete nodes are not run again
    assert "resumed from" in rerun.stderr
    assert _final_losses(killed) == _final_losses(reference)  # bit for bit

    cfg = load_config(ExperimentConfig, "configs/experiment_tiny.yaml",
                      _ladder(demo_family, reference)[4:])  # fmt: skip
    graph = build_graph(cfg)
    assert all(node.done for node in graph)
    # What the plan says each run trains is what it logged, and what it keeps is on disk
    # (a trunk's segments together are one run).
    runs: dict[Path, list] = {}
    for node in graph:
        for task in node.trainings:
            runs.setdefault(task.marker, []).append(task)
    assert len(runs[reference / "h64" / "trunk"]) == 2
    for run_dir, tasks in runs.items():
        last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
                if '"tokens"' in x][-1]  # fmt: skip
        assert last["tokens"] == sum(task.tokens for task in tasks)
        assert last["flops"] == pytest.approx(sum(task.flops for task in tasks))
        kept = [p for p in (run_dir / "checkpoints").glob("step_*")]
        assert len(kept) == sum(task.checkpoints for task in tasks), run_dir
    # The standard arm: k D' tokens in k times the steps, with a branch's LR at every
    # point of equal compute (its step 2t, each branch's step t).
    family = reference / "h64" / "split_4"
    lrs = {run: [json.loads(x)["lr"] for x in (family / run / "metrics.jsonl").read_text()
                 .splitlines() if '"lr"' in x] for run in ("cluster_0", "standard")}  # fmt: skip
    assert lrs["standard"][1::2] == pytest.approx(lrs["cluster_0"]) and len(lrs["standard"]) == 8
    # One table, law points with the standard arms, the law, and the report.
    import pyarrow.parquet as pq

    rows = pq.read_table(reference / "results" / "results.parquet").to_pylist()
    assert {r["arm"] for r in rows} == {"trunk", "specialist", "standard", "standard_per_model"}
    standard = [r for r in rows if r["arm"] == "standard" and r["family"] == "h64/split_4"]
    assert [r["cluster"] for r in standard] == [0, 1]
    assert standard[0]["D"] == (4 + 2 * 4) * TOKENS_PER_STEP and standard[0]["D_prime"] == 0
    assert standard[0]["perplexity"] == pytest.approx(2.718281828 ** standard[0]["loss"])
    points = (reference / "results" / "law_points.csv").read_text().splitlines()
    arms = [line.split(",")[-1] for line in points[1:]]
    # 2 sizes x 2 splits x (2 specialists on their own cluster + 2 mixture arms x 2 clusters)
    assert len(arms) == 2 * 2 * 6 and "trunk" not in arms  # the stable-phase trunk is not one
    fit = json.loads((reference / "laws" / "fit.json").read_text())
    assert fit["form"] == "chinchilla_total" and fit["n_points"] == 24
    report = (reference / "report.md").read_text()
    assert "Split vs standard at equal compute" in report and "The law L(N, D, D')" in report
    assert "split − standard" in report and (reference / "report" / "equal_compute.png").is_file()
    assert "report" in status_table(graph) and "8/8 steps" in status_table(graph)
    assert run_local(graph) == {node.name: "complete" for node in graph}  # nothing left


def test_a_complete_run_planned_with_another_config_is_refused(demo_family, tmp_path):
    args = [
        *experiment_args(demo_family, tmp_path),
        f"trunk.tokens={4 * TOKENS_PER_STEP}",
        f"split_tokens=[{4 * TOKENS_PER_STEP}]",
        f"branches.tokens={TOKENS_PER_STEP}",
    ]
    cfg = load_config(ExperimentConfig, "configs/experiment_tiny.yaml", args)
    assert set(run_local(build_graph(cfg)).values()) == {"succeeded"}
    cfg.overrides = [*cfg.overrides, "optim.lr=0.001"]
    with pytest.raises(ConfigError, match=r"optim.lr: 0.003 -> 0.001.*checkpoint.allow_changes"):
        run_local(build_graph(cfg))


@pytest.mark.slurm
def test_a_job_slurm_refuses_stops_the_submission_before_anything_is_queued(demo_family, tmp_path):
    need_slurm()
    graph = build_graph(experiment(demo_family, tmp_path, "report.slurm.partition=nope"))
    refused = r"nothing was submitted:\n  results: .*partition.*\n  report: .*partition"
    with pytest.raises(ConfigError, match=refused):
        submit_slurm(graph)
    assert not (tmp_path / "experiment.json").exists()  # no job of any node was queued


@pytest.mark.slurm
def test_the_graph_submitted_to_slurm_runs_in_order_and_is_never_submitted_twice(
    demo_family, tmp_path
):
    need_slurm()
    graph = build_graph(experiment(demo_family, tmp_path))
    ids = submit_slurm(graph)
    assert list(ids) == [node.name for node in graph]
    assert submit_slurm(graph) == {}  # all still queued or running: nothing submitted twice
    deadline = time.monotonic() + 600
    while any(slurm_state(job_id) for job_id in ids.values()):
        assert time.monotonic() < deadline, "the experiment did not finish in 10 minutes"
        time.sleep(2)
    for split in (6, 12):
        for run, steps in (("cluster_0", 4), ("cluster_1", 4), ("standard", 8)):
            meta = json.loads((tmp_path / f"split_{split}" / run / "checkpoints"
                               / f"step_{steps:07d}" / "meta.json").read_text())  # fmt: skip
            assert meta["lineage"]["parent_step"] == split
        rows = (tmp_path / f"split_{split}" / "eval" / "results.jsonl").read_text().splitlines()
        assert {json.loads(r)["model"] for r in rows} >= {"trunk", "branch_0", "standard"}
    # the split point survived the trunk's pruning (keep_last=1)
    assert (tmp_path / "trunk" / "checkpoints" / "step_0000006").is_dir()
    assert all(node.done for node in graph) and (tmp_path / "report.md").is_file()
    assert submit_slurm(graph) == {}  # complete: nothing to submit
    if sacct_records(["1"]) is not None:  # with accounting: what each job did
        rows = _status_rows(graph)
        for node in graph:
            state, exit_code = rows[node.name].split()[2], rows[node.name].split()[4]
            assert (state, exit_code) == ("COMPLETED", "0:0"), rows[node.name]
        assert "8/8 steps, last loss " in rows["split_6/standard"]


def test_tokenization_runs_on_slurm_as_an_array_and_one_merge(tmp_path):
    need_slurm()
    stage = DataStage(max_mb=0.4, vocab_size=512, k=2, workers=1, tokenize_tasks=2)
    graph = Graph(stage.nodes(tmp_path / "exp"), tmp_path / "exp")
    parts = graph["shards/parts"]
    expected = [["--task", str(i), "--tasks", "2"] for i in range(2)]
    assert [task.argv[-4:] for task in parts.tasks] == expected
    assert graph["shards"].after == ["shards/parts"]
    ids = submit_slurm(graph)
    deadline = time.monotonic() + 600
    while any(slurm_state(job_id) for job_id in ids.values()):
        assert time.monotonic() < deadline, "the data nodes did not finish in 10 minutes"
        time.sleep(2)
    assert all(node.done for node in graph)  # the array too, although the merge removed its parts
    shards = tmp_path / "exp" / "shards" / "corpus"
    assert not Path(f"{shards}.parts").exists()
    merged = json.loads(Path(f"{shards}.manifest.json").read_text())
    argv = graph["shards"].tasks[0].argv
    planned = int(argv[argv.index("--partitions") + 1])
    assert planned == PARTITIONS_PER_WORKER * 2  # per worker (one), per task (two)
    assert 2 <= merged["partitions"] <= planned and merged["documents"] > 0  # empty ones dropped
    # The same shard as one process tokenizing alone.
    alone = [*argv[: argv.index("--output-prefix") + 1], str(tmp_path / "alone"),
             *argv[argv.index("--output-prefix") + 2 :]]  # fmt: skip
    assert data_cli(alone) == 0
    for suffix in (".bin", ".idx"):
        assert Path(f"{shards}{suffix}").read_bytes() == (tmp_path / f"alone{suffix}").read_bytes()


def _status_rows(graph) -> dict[str, str]:
    return {line.split()[0]: line for line in status_table(graph).splitlines()[1:] if line}


@pytest.mark.slurm
def test_a_preempted_array_task_resumes_under_its_own_index_as_if_never_stopped(
    demo_family, tmp_path
):
    need_slurm()
    full = build_graph(experiment(demo_family, tmp_path, f"trunk.tokens={6 * TOKENS_PER_STEP}",
                                  f"split_tokens=[{6 * TOKENS_PER_STEP}]",
                                  f"branches.tokens={400 * TOKENS_PER_STEP}"))  # fmt: skip
    # 400 steps (~10 s here) leave the signal time to arrive on a loaded machine
    graph = Graph([full["trunk"], full["split_6/branches"]], full.out)  # the two branches only
    ids = submit_slurm(graph)
    branch = graph["split_6/branches"].tasks[1]
    deadline = time.monotonic() + 300
    while not (branch.marker / "metrics.jsonl").is_file() or max(metrics(branch.marker),
                                                                 default=0) < 10:  # fmt: skip
        assert time.monotonic() < deadline, "branch 1 did not reach step 10"
        time.sleep(0.1)
    task = f"{ids['split_6/branches']}_1"  # SIGUSR2, as before a time limit or preemption
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    while any(slurm_state(job_id) for job_id in ids.values()):
        assert time.monotonic() < deadline, "the requeued branch did not finish"
        time.sleep(1)
    saved = sorted(p.name for p in (branch.marker / "checkpoints").glob("step_*"))
    assert len(saved) == 2 and saved[-1] == "step_0000400", saved  # preemption + final
    # the same run, never stopped, in a directory of its own
    reference = tmp_path / "reference"
    done = subprocess.run([sys.executable, "-m", "megatron_split.train_cli", *branch.argv,
                           f"run_dir={reference}"], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert metrics(branch.marker) == metrics(reference)  # bit for bit
    assert metrics(graph["split_6/branches"].tasks[0].marker)  # its sibling was not disturbed


@pytest.mark.slurm
def test_status_names_a_failed_job_its_log_and_every_node_it_stops(demo_family, tmp_path):
    need_slurm(accounting=True)
    graph = build_graph(experiment(demo_family, tmp_path))
    (tmp_path / "trunk").write_text("a file where the trunk's run directory goes\n")
    ids = submit_slurm(graph)
    stopped = ("trunk/step_12", "split_6/branches", "split_12/eval", "report")
    deadline = time.monotonic() + 120
    # Slurm cancels the dependents (kill_invalid_depend) a moment after the failure, and its
    # accounting has them a moment later: until then they show PENDING.
    while not all(_status_rows(graph)[name].split()[2] == "CANCELLED" for name in stopped):
        assert time.monotonic() < deadline, status_table(graph)
        time.sleep(1)
    rows = _status_rows(graph)
    first = rows["trunk/step_6"]
    assert first.split()[2:5] == ["FAILED", ids["trunk/step_6"], "1:0"], first
    log = Path(first.split("): ", 1)[1])
    assert log.is_file() and "trunk" in log.read_text()  # the job's own traceback
    for name in stopped:
        assert rows[name].endswith("<- never runs: trunk/step_6 failed"), rows[name]


@pytest.mark.slurm
def test_cancel_stops_a_node_and_every_node_after_it(demo_family, tmp_path):
    need_slurm()
    graph = build_graph(experiment(demo_family, tmp_path))
    ids = submit_slurm(graph)  # the families wait for the trunk: all still queued below
    with pytest.raises(ConfigError, match=r"no nodes named \['split_7/eval'\]"):
        cancel_slurm(graph, ["split_7/eval"])
    cancelled = cancel_slurm(graph, ["split_6/branches"])
    assert cancelled == {name: ids[name] for name in
                         ("split_6/branches", "split_6/eval", "results", "report")}  # fmt: skip
    assert not any(slurm_state(job_id) for job_id in cancelled.values())
    assert slurm_state(ids["split_12/branches"])  # the other family is still queued
    (line,) = [x for x in status_table(graph).splitlines() if x.startswith("split_6/branches")]
    # CANCELLED once Slurm's accounting has the job, "cancelled" (our record) until then
    assert "cancelled" in line.lower()
    rest = cancel_slurm(graph)  # everything else
    assert "split_12/eval" in rest and not set(rest) & set(cancelled)
    deadline = time.monotonic() + 60  # a running job leaves the queue once it has stopped
    while any(slurm_state(job_id) for job_id in ids.values()):
        assert time.monotonic() < deadline, {n: slurm_state(j) for n, j in ids.items()}
        time.sleep(0.5)
    assert cancel_slurm(graph) == {}


def dry_run(demo_family, tmp_path, *overrides: str):
    """`msplit experiment submit --dry-run` of configs/experiment_tiny.yaml; its folder."""
    if shutil.which("srun") is None:
        pytest.skip("submitit writes sbatch scripts only where srun is installed")
    dry = tmp_path / "dry"
    argv = ["submit", "configs/experiment_tiny.yaml", f"out={tmp_path / 'exp'}",
            f"clusters={demo_family / 'clusters'}", *overrides, "--dry-run", str(dry)]  # fmt: skip
    assert experiment_cli(argv) == 0
    return dry


@pytest.mark.slurm
def test_a_dry_run_writes_every_sbatch_script_and_submits_nothing(demo_family, tmp_path):
    dry = dry_run(demo_family, tmp_path)
    graph = json.loads((dry / "graph.json").read_text())
    assert graph["split_100/eval"] == ["split_100/branches", "split_100/standard"]
    branches = (dry / "split_100.branches.sbatch").read_text()
    assert "#SBATCH --array=0-1%2" in branches  # the k = 2 branches, one array
    # after the trunk's segment that ends at step 100, which the next segment resumes
    assert "--dependency='afterok:<trunk/step_100>'" in branches
    assert "--dependency='afterok:<trunk/step_100>'" in (dry / "trunk.step_200.sbatch").read_text()
    assert "#SBATCH --kill-on-invalid-dep=yes" in branches  # a failed trunk cancels them
    assert "#SBATCH --job-name=msplit:split_100/branches" in branches
    assert len(list(dry.glob("*.sbatch"))) == len(graph)
    assert not (tmp_path / "exp" / "experiment.json").exists()  # nothing was submitted


SITE = {"partition": "gpu", "account": "proj42", "qos": "high", "reservation": "maint",
        "constraint": "h100", "exclusive": True, "nodes": 2, "tasks_per_node": 8,
        "cpus_per_task": 12, "gpus_per_node": 8, "mem_gb": 512, "timeout_min": 90,
        "signal_delay_s": 300, "max_requeues": 5,
        "extra": {"mail-type": "END", "requeue": True},
        "env": {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5", "PATH": "/opt/cuda/bin:$PATH"},
        "setup": ["module load cuda/12.4", "source /opt/venv/bin/activate"],
        "python": "/opt/venv/bin/python", "srun_args": ["--mpi=pmix"]}  # fmt: skip
SITE_LINES = ["--partition=gpu", "--account=proj42", "--qos=high", "--reservation=maint",
              "--constraint=h100", "--exclusive", "--nodes=2", "--ntasks-per-node=8",
              "--cpus-per-task=12", "--gpus-per-node=8", "--mem=512GB", "--time=90",
              "--signal=USR2@300", "--mail-type=END", "--requeue"]  # fmt: skip


@pytest.mark.slurm
def test_a_stages_slurm_fields_are_in_its_script_and_no_other(demo_family, tmp_path):
    # 16 processes: a micro-batch of 1 makes the global batch of 16 divide among them
    site = [f"trunk.slurm={json.dumps(SITE)}", "trunk.overrides=[train.micro_batch=1]"]
    dry = dry_run(demo_family, tmp_path, *site)
    trunk, branches = (
        (dry / "trunk.step_100.sbatch").read_text(),
        (dry / "split_100.branches.sbatch").read_text(),
    )
    for line in SITE_LINES:
        assert f"#SBATCH {line}\n" in trunk, line
        assert f"#SBATCH {line}\n" not in branches, line
    # the job environment: the defaults every job gets, and the stage's own over them
    for script, debug in ((trunk, "INFO"), (branches, "WARN")):
        assert 'export CUDA_DEVICE_MAX_CONNECTIONS="1"\n' in script
        assert 'export TORCH_NCCL_ASYNC_ERROR_HANDLING="3"\n' in script
        assert f'export NCCL_DEBUG="{debug}"\n' in script
    assert 'export NCCL_IB_HCA="mlx5"\n' in trunk and "NCCL_IB_HCA" not in branches
    # the site's setup first, then the environment, expanded by the job's shell
    setup = "module load cuda/12.4\nsource /opt/venv/bin/activate\nexport CUDA_DEVICE"
    assert setup in trunk and 'export PATH="/opt/cuda/bin:$PATH"\n' in trunk
    assert "--mpi=pmix /opt/venv/bin/python -u -m submitit" in trunk
    assert "module load" not in branches and "/opt/venv/bin/python" not in branches
    base = [f"out={tmp_path}", f"clusters={demo_family / 'clusters'}"]
    cfg = load_config(ExperimentConfig, "configs/experiment_tiny.yaml", [*base, *site])
    executor = cfg.trunk.slurm.executor(cluster="slurm")
    assert executor._executor.max_num_timeout == 5  # requeues after time-out or preemption


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trunk.slurm.timeout_min=0"], "trunk.slurm.timeout_min must be >= 1, got 0"),
        (["eval.slurm.nodes=0"], "eval.slurm.nodes must be >= 1, got 0"),
        (["laws.slurm.mem_gb=0"], "laws.slurm.mem_gb must be >= 1"),
        (
            ["branches.slurm.signal_delay_s=1800"],
            "branches.slurm.signal_delay_s=1800 is not within the job's branches.slurm."
            "timeout_min=30 minutes",
        ),
        (
            ["trunk.slurm.tasks_per_node=8", "trunk.slurm.gpus_per_node=4"],
            "trunk.slurm.tasks_per_node=8 with gpus_per_node=4: one task drives one GPU",
        ),
        (["trunk.slurm.extra.requeue=false"], "trunk.slurm.extra.requeue: false sets no option"),
        # the global batch of 16 (micro-batch 4) does not divide among 32 processes
        (
            ["trunk.slurm.nodes=4", "trunk.slurm.tasks_per_node=8", "trunk.slurm.gpus_per_node=8"],
            "micro_batch=4 x data-parallel size 32 (the 32 processes of trunk.slurm: nodes x "
            "tasks_per_node)",
        ),
        (["standard.slurm.tasks_per_node=3"], "data-parallel size 3"),
        (["model.fp8={}", "model.attention=te"], "model.fp8 needs GPUs: set trunk.slurm."),
        # read at planning, not after the training it follows
        (
            ['eval.tasks=["arc_easy:arc=/nonexistent.jsonl"]'],
            "eval.tasks[0]: /nonexistent.jsonl: no such file or directory (task arc)",
        ),
        (['eval.tasks=["arc_easy=x.jsonl"]'], "eval.tasks[0]: unknown task 'arc_easy'"),
    ],
)
def test_a_job_that_could_not_run_is_refused_before_anything_is_submitted(
    demo_family, tmp_path, overrides, message
):
    def plan() -> None:
        base = [f"out={tmp_path}", f"clusters={demo_family / 'clusters'}"]
        if overrides[0].startswith("model."):  # of every run
            base.append(f"overrides={json.dumps(overrides)}")
            overrides.clear()
        build_graph(load_config(ExperimentConfig, "configs/experiment_tiny.yaml",
                                [*base, *overrides]))  # fmt: skip

    with pytest.raises(ConfigError, match=re.escape(message)):
        plan()


def test_a_missing_cluster_directory_is_named_with_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match=r"clusters=nowhere: no such directory \(`msplit data"):
        build_graph(load_config(ExperimentConfig, "configs/experiment_tiny.yaml",
                                [f"out={tmp_path}", "clusters=nowhere"]))  # fmt: skip


def released(source: Path, out: Path, *overrides: str) -> ExperimentConfig:
    runs = [*TINY, "optim.schedule.warmup_steps=1", "optim.lr=1e-4"]
    base = [f"out={out}", f"trunk.from_hf={source}", f"overrides={json.dumps(runs)}",
            f"branches.tokens={2 * TOKENS_PER_STEP}", "eval.heldout_samples=4",
            "data.max_mb=0.3"]  # fmt: skip
    return load_config(ExperimentConfig, "configs/smollm2_split.yaml", [*base, *overrides])


def test_a_released_model_is_the_trunk_of_one_family(tokenizer_dir, tmp_path):
    from tests.megatron_split.hf_models import random_model

    random_model("llama-gqa-tied", tokenizer_dir, tmp_path / "hf")
    graph = build_graph(released(tmp_path / "hf", tmp_path / "out"))
    assert [node.name for node in graph] == [
        "model", "corpus", "shards", "embeddings", "clusters", "released/branches",
        "released/standard", "released/eval", "results", "report",
    ]  # fmt: skip
    # tokenized with the model's tokenizer, once the corpus is written (on Slurm nothing
    # but this dependency orders the two)
    assert graph["shards"].after == ["corpus", "model"]
    assert f"hf:{tmp_path / 'out' / 'model'}" in graph["shards"].tasks[0].argv
    branch = graph["released/branches"].trainings[0]
    run = resolved(branch)
    assert run.init.checkpoint == str(tmp_path / "out" / "model")
    assert run.init.model_from_parent and not run.init.load_optimizer
    assert run.optim.schedule.kind == "wsd" and run.optim.schedule.warmup_steps > 0
    # planned in the released model's architecture: its FLOPs, not the base config's
    assert branch.flops == pytest.approx(
        branch.tokens * run.model.with_architecture(
            {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
             "num_query_groups": 2, "ffn_hidden_size": 96, "vocab_size": 400,
             "make_vocab_size_divisible_by": 1}).flops_per_token()
    )  # fmt: skip
    standard = graph["released/standard"].trainings[0]
    assert standard.steps == 2 * branch.steps  # k D' tokens


@pytest.mark.parametrize(
    "override", ["trunk.tokens=4096", "split_fractions=[0.5]", "ladder={a: {}, b: {}}"]
)
def test_a_released_trunk_has_nothing_to_train_or_split(override, tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="with trunk.from_hf: the released model is the only"):
        released(tmp_path / "hf", tmp_path / "out", override).validate()


def test_a_released_model_is_specialised_end_to_end(tmp_path):
    """SmolLM2-135M from its released GGUF: imported, the corpus tokenized with its tokenizer
    and clustered, two branches and the standard arm trained, every model evaluated."""
    from tests.megatron_split.hf_models import smollm2

    cfg = released(smollm2(), tmp_path / "out")
    graph = build_graph(cfg)
    assert set(run_local(graph).values()) == {"succeeded"}
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out" / "results" / "results.parquet").to_pylist()
    assert {r["arm"] for r in rows} == {"trunk", "specialist", "standard"}
    trunk = [r for r in rows if r["arm"] == "trunk"]
    # every model read the same held-out sequences, at the branches' length, not the 8192
    # tokens the released model's config allows; a trained LM is far below uniform's loss
    assert len({(r["cluster"], r["tokens_evaluated"]) for r in rows}) == 2  # one per cluster
    assert max(r["tokens_evaluated"] for r in rows) <= 4 * 64  # heldout_samples x 64 tokens
    assert len(trunk) == 2 and all(r["loss"] < 0.5 * math.log(49152) for r in trunk)
    meta = json.loads((tmp_path / "out" / "released" / "cluster_0" / "checkpoints" /
                       "step_0000002" / "meta.json").read_text())  # fmt: skip
    assert meta["config"]["model"]["num_layers"] == 30  # the model's architecture
    assert meta["lineage"]["parent_lineage"]["imported_from"] == str(smollm2())
    assert "Split vs standard at equal compute" in (tmp_path / "out" / "report.md").read_text()
