"""`msplit demo` end to end at a small size: the experiment graph from the corpus to the
report (tokenizer, shards, embeddings, clusters, trunk, a branch per cluster, the standard
arm, the evaluation of all of them from their checkpoints, the results table)."""

import json
import time

import pytest

from tests.demo_family import (
    BRANCH_STEPS,
    SPLIT,
    TOKENS_PER_STEP,
    TRUNK_STEPS,
    heldout_loss,
    run_demo,
)

pytestmark = pytest.mark.slow


def val_losses(run_dir) -> dict[int, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in records if "val_loss" in r}


def test_demo_runs_end_to_end(demo_family):
    out = demo_family
    manifest = json.loads((out / "shards" / "corpus.manifest.json").read_text())
    assert manifest["documents"] > 0 and manifest["tokens"] > 0
    records = [json.loads(x) for x in (out / "trunk" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert (out / "trunk" / "checkpoints" / "latest").read_text() == f"step_{TRUNK_STEPS:07d}"
    for run, steps in (
        ("cluster_0", BRANCH_STEPS),
        ("cluster_1", BRANCH_STEPS),
        ("standard", 2 * BRANCH_STEPS),
    ):  # k = 2 times D', at the same batch
        latest = (out / SPLIT / run / "checkpoints" / "latest").read_text()
        assert latest == f"step_{steps:07d}"
        meta = json.loads((out / SPLIT / run / "checkpoints" / latest / "meta.json").read_text())
        assert meta["lineage"]["parent_step"] == TRUNK_STEPS
        assert meta["run"]["annealed"] and meta["run"]["code_version"].startswith("0.1.0")
    # The evaluation, run from the saved checkpoints on one process, reproduces the
    # validation losses the training loop logged: the trunk's on this cluster (the
    # branch's step 0) and the specialist's at its end.
    for cluster in (0, 1):
        during_training = val_losses(out / SPLIT / f"cluster_{cluster}")
        assert heldout_loss(out, "trunk", cluster) == pytest.approx(during_training[0], abs=1e-5)
        specialist = heldout_loss(out, f"branch_{cluster}", cluster)
        assert specialist == pytest.approx(during_training[BRANCH_STEPS], abs=1e-5)
    for name in ("results.jsonl", "results.md", "heldout_loss.png"):
        assert (out / SPLIT / "eval" / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| cluster | trunk | standard | specialist |" in report
    assert f"{heldout_loss(out, 'standard', 1):.4f}" in report  # the standard arm, cluster 1


def test_demo_eval_writes_the_points_a_scaling_law_is_fitted_to(demo_family):
    from laws import load_table

    lines = (demo_family / SPLIT / "eval" / "law_points.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    trunk_tokens, branch_tokens = (TRUNK_STEPS * TOKENS_PER_STEP, BRANCH_STEPS * TOKENS_PER_STEP)
    # Annealed runs only: each specialist on its own cluster, the standard arm (the mixture
    # for k D' tokens: D = trunk + 2 x D', D' = 0) on both; not the stable-phase trunk.
    standard_tokens = trunk_tokens + 2 * branch_tokens
    assert sorted((p["arm"], p["domain"], p["D"], p["D_prime"]) for p in points) == [
        ("specialist", "cluster_0", trunk_tokens, branch_tokens),
        ("specialist", "cluster_1", trunk_tokens, branch_tokens),
        ("standard", "cluster_0", standard_tokens, 0),
        ("standard", "cluster_1", standard_tokens, 0),
    ]
    assert len({p["N"] for p in points}) == 1
    assert len(load_table(demo_family)) == 4  # laws reads the whole experiment directory
    csv = (demo_family / "results" / "law_points.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and csv[0] == "N,D,D_prime,loss,domain,run,arm"


def test_demo_rerun_is_a_no_op_in_seconds(demo_family):
    start = time.monotonic()
    again = run_demo(demo_family)
    assert time.monotonic() - start < 60
    assert "running" not in again.stderr  # every node complete: none is run again
    assert "report" in again.stdout
