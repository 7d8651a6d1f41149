"""`msplit demo` end to end at a small size: corpus, tokenizer, shards, embeddings, clusters,
trunk, one branch per cluster, and the evaluation of all of them from their checkpoints."""

import json

import pytest

from tests.demo_family import run_demo

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
    assert (out / "trunk" / "checkpoints" / "latest").read_text() == "step_0000012"
    summary = json.loads((out / "summary.json").read_text())
    assert [row["cluster"] for row in summary["clusters"]] == [0, 1]
    for row in summary["clusters"]:
        branch = out / "branches" / f"cluster_{row['cluster']}"
        assert (branch / "checkpoints" / "latest").read_text() == "step_0000004"
        meta = json.loads((branch / "checkpoints" / "step_0000004" / "meta.json").read_text())
        assert meta["lineage"]["parent_step"] == 12
        # The evaluation, run from the saved checkpoints on one process, reproduces the
        # validation losses the training loop logged: the trunk's on this cluster (the
        # branch's step 0) and the specialist's at its end.
        during_training = val_losses(branch)
        assert row["trunk"] == pytest.approx(during_training[0], abs=1e-5)
        assert row["specialist"] == pytest.approx(during_training[4], abs=1e-5)
    for name in ("results.jsonl", "results.md", "heldout_loss.png"):
        assert (out / "eval" / name).stat().st_size > 0


def test_demo_eval_writes_the_points_a_scaling_law_is_fitted_to(demo_family):
    from laws import load_table

    lines = (demo_family / "eval" / "law_points.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    trunk_tokens, branch_tokens = 12 * 16 * 128, 4 * 16 * 128  # steps x batch x sequence
    assert sorted((p["domain"], p["D"], p["D_prime"]) for p in points) == [
        ("cluster_0", trunk_tokens, 0),
        ("cluster_0", trunk_tokens, branch_tokens),
        ("cluster_1", trunk_tokens, 0),
        ("cluster_1", trunk_tokens, branch_tokens),
    ]
    assert len({p["N"] for p in points}) == 1
    assert len(load_table(demo_family)) == 4  # laws reads the whole experiment directory


def test_demo_rerun_skips_finished_stages(demo_family):
    again = run_demo(demo_family)
    for stage in ("corpus", "tokenizer", "shards", "embeddings", "clusters"):
        assert f"[{stage}] done already" in again.stderr
