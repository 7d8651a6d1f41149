"""The phonebook experiment as a config of the experiment graph: the method's total-budget
accounting, each book scored by its own specialist, exact recall by hand, reruns that skip
what is done, and the report's reading of its findings."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_split.config import ConfigError, load_config
from megatron_split.train.config import RunConfig
from slurm.experiment import ExperimentConfig, build_graph
from slurm.phonebook import curves, findings, recall_rows

TOKENS_PER_STEP = 16 * 128  # configs/tiny.yaml


def phonebook(out, *overrides: str) -> ExperimentConfig:
    return load_config(ExperimentConfig, "configs/phonebook.yaml", [f"out={out}", *overrides])


def resolved(task) -> RunConfig:
    return load_config(RunConfig, task.argv[0], task.argv[1:], inputs=False)


def test_each_budget_is_a_trunk_then_two_branches_sharing_what_is_left(tmp_path):
    cfg = phonebook(tmp_path)
    graph = build_graph(cfg)
    names = [node.name for node in graph]
    budgets = [budget // TOKENS_PER_STEP for budget in cfg.budgets]
    for overlap in (0.0, 0.25, 0.5):
        data = graph[f"overlap_{overlap}/phonebook"].tasks[0]
        assert data.argv[data.argv.index("--overlap") + 1] == str(overlap)
        for seed in (1, 2, 3):
            at = f"overlap_{overlap}/seed_{seed}"
            splits = sorted({round(f * t) for t in budgets for f in cfg.split_fractions} - {0})
            trunk = resolved(graph[f"{at}/trunk/step_{splits[-1]}"].tasks[0])
            assert trunk.train.steps == splits[-1] and trunk.checkpoint.keep_steps == splits
            assert trunk.optim.schedule.kind == "constant" and trunk.seed == seed
            assert trunk.data.clusters == str(tmp_path / f"overlap_{overlap}" / "clusters")
            for budget, steps in zip(cfg.budgets, budgets, strict=True):
                family = f"{at}/budget_{budget}"
                for fraction in cfg.split_fractions:
                    split = round(fraction * steps)
                    branches = graph[f"{family}/split_{split}/branches"]
                    runs = [resolved(t) for t in branches.tasks]
                    # after the trunk's segment that ends at the split, not the whole trunk
                    assert branches.after == ([f"{at}/trunk/step_{split}"] if split else
                                              [f"overlap_{overlap}/clusters"])  # fmt: skip
                    assert [r.train.steps for r in runs] == [(steps - split) // 2] * 2
                    assert sum(r.train.steps for r in runs) == steps - split
                    assert [(r.data.cluster, r.role.cluster) for r in runs] == [(0, 0), (1, 1)]
                    for run in runs:
                        if split:  # on from the trunk's LR and optimizer, decayed
                            assert run.init.checkpoint.endswith(
                                f"trunk/checkpoints/step_{split:07d}"
                            )
                            assert run.optim.schedule.warmup_steps == 0
                        else:  # each book alone from scratch, warmed up like the trunk
                            assert run.init.checkpoint is None
                            assert (
                                run.optim.schedule.warmup_steps == trunk.optim.schedule.warmup_steps
                            )
                        assert run.optim.schedule.kind == "wsd"
                    if split:  # the baseline is planned once per budget
                        assert f"{family}/split_{split}/standard" not in names
                (baseline,) = [resolved(t) for t in graph[f"{family}/split_0/standard"].tasks]
                assert baseline.train.steps == steps and baseline.init.checkpoint is None
                assert baseline.data.cluster is None and baseline.role.arm == "standard"
                evaluation = graph[f"{family}/split_0/eval"].tasks[0].argv
                assert "--trunk" not in evaluation
                facts = evaluation[evaluation.index("--facts") + 1]
                assert facts == str(tmp_path / f"overlap_{overlap}" / "phonebook" / "facts.json")
                tags = [evaluation[i + 1] for i, arg in enumerate(evaluation) if arg == "--tag"]
                assert tags == [f"overlap={overlap}", f"seed={seed}", f"budget={budget}"]
    for overlap in (0.0, 0.25, 0.5):  # two budgets' runs at one split step differ too
        runs = [resolved(t) for node in graph if node.name.startswith(f"overlap_{overlap}/")
                for t in node.trainings]  # fmt: skip
        seeds = {run.run_dir: run.seed for run in runs}  # a trunk's segments are one run
        assert len(set(seeds.values())) == len(seeds)  # each overlap repeats them: paired


def test_budgets_that_do_not_divide_are_refused_by_field(tmp_path):
    with pytest.raises(ConfigError, match=r"split_fractions\[1\] x budgets\[0\]=76800 is not"):
        build_graph(phonebook(tmp_path, "budgets=[307200]"))
    with pytest.raises(ConfigError, match=r"budgets\[0\]: the 4097 tokens after .* do not divide"):
        build_graph(phonebook(tmp_path, "budgets=[4097]", "split_fractions=[0.0]"))
    indivisible = (r"\(budgets\[0\] - split\) / k at split_fractions\[0\] x budgets\[0\]=3072 "
                   r"is not a positive multiple of the 2048 tokens")  # fmt: skip
    with pytest.raises(ConfigError, match=indivisible):
        build_graph(phonebook(tmp_path, "budgets=[6144]", "split_fractions=[0.0]"))
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\)"):
        phonebook(tmp_path, "split_fractions=[0.5,1.0]")
    with pytest.raises(ConfigError, match="branches.tokens=2048 with budgets"):
        phonebook(tmp_path, "branches.tokens=2048")
    with pytest.raises(ConfigError, match="data.phonebook: .* set data.k=2"):
        phonebook(tmp_path, "data.k=3")
    with pytest.raises(ConfigError, match="report.kind=phonebook: the data must be"):
        load_config(
            ExperimentConfig, "configs/demo.yaml", [f"out={tmp_path}", "report.kind=phonebook"]
        )


def _row(overlap, budget, seed, split, arm, model, cluster, recall):
    return {"overlap": overlap, "budget": budget, "seed": seed, "split_tokens": split or None,
            "arm": arm, "model": model, "cluster": cluster, "fact_recall": recall}  # fmt: skip


def _table(curve: dict, baseline: float, overlap: float, budget: int) -> list[dict]:
    """Results-table rows of one (overlap, T): per split, each book's specialist's recall
    (given per seed as (book a, book b)), the trunk's, and the baseline's."""
    rows = []
    for split, per_seed in curve.items():
        for seed, (a, b) in enumerate(per_seed, 1):
            rows += [_row(overlap, budget, seed, split, "specialist", "branch_0", 0, a),
                     _row(overlap, budget, seed, split, "specialist", "branch_1", 0, 0.0),
                     _row(overlap, budget, seed, split, "specialist", "branch_1", 1, b),
                     _row(overlap, budget, seed, split, "trunk", "trunk", 1, 0.5)]  # fmt: skip
            if split == 0:
                rows += [_row(overlap, budget, seed, 0, "standard", "standard", c, baseline)
                         for c in (0, 1)]  # fmt: skip
    return rows


def test_the_report_labels_budgets_and_reads_each_finding():
    limited = {0: [(0.5, 0.6), (0.5, 0.5)], 100: [(0.9, 0.9), (0.8, 0.9)], 200: [(0.6, 0.6)] * 2}
    later = {0: [(0.4, 0.4)] * 2, 100: [(0.6, 0.6)] * 2, 200: [(0.8, 0.7), (0.8, 0.8)]}
    enough = {0: [(1.0, 1.0)] * 2, 100: [(1.0, 1.0), (1.0, 0.98)], 200: [(0.9, 0.9)] * 2}
    rows = (_table(limited, 0.3, 0.0, 400) + _table(enough, 0.7, 0.0, 800)
            + _table(later, 0.3, 0.5, 400) + _table(enough, 0.7, 0.5, 800))  # fmt: skip
    table = recall_rows(rows)
    assert len(table) == 2 * 2 * 3 * 2  # (overlap, T, s, seed)
    first = table[0]
    assert (first["overlap"], first["budget"], first["split_tokens"], first["seed"]) == (
        0.0,
        400,
        0,
        1,
    )
    assert (first["recall_a"], first["recall_b"], first["average"]) == (0.5, 0.6, 0.55)
    assert first["baseline"] == 0.3 and first["split_fraction"] == 0.0
    made = curves(table)
    assert [(c.overlap, c.budget, c.sufficient) for c in made] == [
        (0.0, 400, False), (0.0, 800, True), (0.5, 400, False), (0.5, 800, True)]  # fmt: skip
    # s = T is no split: the baseline ends every curve
    assert made[0].fractions == [0.0, 0.25, 0.5, 1.0]
    assert made[0].mean == pytest.approx([0.525, 0.875, 0.6, 0.3]) and made[0].best() == 1
    text = findings(made)
    assert text[0].startswith("- overlap 0, T = 400 (limited): the best split step is interior: "
                              "**holds** (best interior s = 0.25 T: 0.875 ± 0.035; ends s = 0: "
                              "0.525 ± 0.035, no split: 0.300 ± 0.000)")  # fmt: skip
    assert (
        "overlap 0, T = 800 (sufficient): splitting early is as good as any: **holds**" in text[1]
    )
    assert "overlap 0.5, T = 400 (limited): the best split step is interior: **holds**" in text[2]
    assert ("more overlap moves the best split later: **holds** (overlap 0: best s = 0.25 T: "
            "0.875 ± 0.035; overlap 0.5: best s = 0.5 T: 0.775 ± 0.035") in text[4]  # fmt: skip
    # the best at an end is not interior; within the seeds' spread is not a move
    flat = {0: [(0.9, 0.9)] * 2, 100: [(0.5, 0.5)] * 2, 200: [(0.4, 0.4)] * 2}
    noisy = {0: [(0.4, 0.4)] * 2, 100: [(0.9, 0.3), (0.6, 0.6)], 200: [(1.0, 0.9), (0.3, 0.3)]}
    lagging = {0: [(1.0, 1.0)] * 2, 100: [(1.0, 1.0)] * 2, 200: [(0.9, 0.9)] * 2}
    rows = (_table(flat, 0.3, 0.0, 400) + _table(noisy, 0.3, 0.5, 400)
            + _table(lagging, 0.7, 0.0, 800))  # fmt: skip
    text = findings(curves(recall_rows(rows)))
    assert (
        "overlap 0, T = 400 (limited): the best split step is interior: **does not hold**"
        in text[0]
    )
    assert (
        "overlap 0, T = 800 (sufficient): splitting early is as good as any: **holds**" in text[1]
    )
    assert (
        "overlap 0.5, T = 400 (limited): the best split step is interior: **does not hold**"
        in text[2]
    )
    assert "more overlap moves the best split later: **does not hold**" in text[3]


@pytest.mark.slow
def test_a_tiny_phonebook_runs_end_to_end_and_a_rerun_skips_it(tmp_path):
    from eval.facts import fact_recall
    from eval.lm import CheckpointLM, encode_pair

    out = tmp_path / "pb"
    tiny = ["model.seq_length=64", "train.global_batch=4", "train.micro_batch=2",
            "optim.schedule.warmup_steps=1", "train.eval_every=0", "train.log_every=50",
            "checkpoint.every=0", "train.progress=false", "train.tensorboard=false"]  # fmt: skip
    cmd = [sys.executable, "-m", "megatron_split.cli", "phonebook", "--out", str(out),
           "data.phonebook.entries=6", "data.phonebook.repeats=3",
           "data.phonebook.facts_per_doc=2", "data.heldout=70,30,0", "seeds=[1]",
           "sweep={data.phonebook.overlap: [0.0, 0.5]}", "budgets=[2048]",
           "split_fractions=[0.0,0.5]", f"overrides={json.dumps(tiny)}",
           "eval.heldout_samples=2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    table = (out / "results" / "phonebook.csv").read_text().splitlines()
    assert table[0] == ("overlap,budget,split_tokens,split_fraction,seed,recall_a,recall_b,"
                        "average,baseline")  # fmt: skip
    assert [line.split(",")[:3] for line in table[1:]] == [
        ["0.0", "2048", "0"], ["0.0", "2048", "1024"],
        ["0.5", "2048", "0"], ["0.5", "2048", "1024"],
    ]  # fmt: skip
    report = (out / "report.md").read_text()
    assert "## Findings" in report and "overlap 0.5, T = 2.05K" in report
    assert (out / "recall.png").stat().st_size > 0

    family = out / "overlap_0.5" / "budget_2048" / "split_4"
    rows = [
        json.loads(line) for line in (family / "eval" / "results.jsonl").read_text().splitlines()
    ]
    recall = {(r["model"], r["cluster"]): r["value"] for r in rows if r["metric"] == "recall"}
    # each book by its own specialist; the trunk (a single model) on both
    assert set(recall) == {("trunk", 0), ("trunk", 1), ("branch_0", 0), ("branch_1", 1)}
    assert all(r["tags"] == {"overlap": 0.5, "seed": 1, "budget": 2048} for r in rows)
    facts = json.loads((out / "overlap_0.5" / "phonebook" / "facts.json").read_text())["facts"]
    assert sum("a" in f["books"] and "b" in f["books"] for f in facts) == 3  # half of b in a
    branch = json.loads((family / "cluster_1" / "checkpoints" / "step_0000002" / "meta.json")
                        .read_text())  # fmt: skip
    assert branch["lineage"]["parent_step"] == 4
    # recall by hand: greedy decoding reproduces the number, digit by digit
    lm = CheckpointLM.load(family / "cluster_1")
    book_b = [f for f in facts if "b" in f["books"]]
    by_hand = 0
    for fact in book_b:
        context, answer = encode_pair(lm.tokenizer, f"{fact['name']}:", f" {fact['number']}")
        (generated,) = lm.generate([context], max_new_tokens=len(answer))
        by_hand += generated == answer
    assert recall[("branch_1", 1)] == fact_recall(lm, book_b) == by_hand / len(book_b)

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "running" not in again.stderr and "nothing to run" in again.stderr + again.stdout


def test_the_committed_results_are_what_their_table_gives(tmp_path):
    """benchmarks/results/phonebook (`make phonebook`): the report and the per-(overlap, T,
    s, seed) table rewritten from the committed results table equal the committed ones, and
    they hold what the experiment asks for."""
    from slurm.phonebook import write_report

    committed = Path("benchmarks/results/phonebook")
    (tmp_path / "results").mkdir()
    shutil.copy(committed / "results" / "results.parquet", tmp_path / "results")
    shutil.copy(committed / "experiment.json", tmp_path)
    write_report(tmp_path)
    for name in ("report.md", "results/phonebook.csv"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
    table = list(csv.DictReader((committed / "results" / "phonebook.csv").open()))
    assert {float(r["overlap"]) for r in table} >= {0.0, 0.25, 0.5}
    assert len({r["seed"] for r in table}) >= 3
    assert {float(r["split_fraction"]) for r in table} >= {0.0, 0.25, 0.5, 0.75}
    report = (committed / "report.md").read_text()
    assert "(limited)" in report and "(sufficient)" in report
