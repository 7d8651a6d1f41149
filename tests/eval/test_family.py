"""Evaluating a trunk and its branches: family checks, routing, the CLI's outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eval.family import FamilyError, check_family
from eval.lm import CheckpointLM
from eval.mc import ChoiceScores, accuracy, mix
from eval.router import Router
from eval.tasks import load_task
from tests.demo_family import SPLIT, branches, heldout_loss
from tests.megatron_split.runs import python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arc_file(demo_family, tmp_path_factory):
    """ARC-format items whose questions are corpus snippets (so they route to clusters),
    three of each source, labelled with it as their domain."""
    corpus = sorted((demo_family / "corpus").glob("*.jsonl"))[0]
    by_source: dict[str, list[str]] = {}
    for line in corpus.read_text().splitlines():
        doc = json.loads(line)
        if len(doc["text"]) > 240:  # no empty choice
            by_source.setdefault(doc["source"], []).append(doc["text"])
    docs = [(source, text) for source, texts in by_source.items() for text in texts[:3]]
    records = [
        {
            "id": f"q{i}",
            "question": {
                "stem": text[:200],
                "choices": [
                    {"text": text[200:240], "label": "A"},
                    {"text": docs[i - 1][1][200:240], "label": "B"},
                ],  # fmt: skip
            },
            "answerKey": "A",
            "domain": source,
        }
        for i, (source, text) in enumerate(docs)
    ]
    path = tmp_path_factory.mktemp("tasks") / "ARC-Test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_branches_must_match_their_clusters(demo_family):
    from megatron_split.data.clusters import ClusterDataConfig

    prefixes = ClusterDataConfig(str(demo_family / "clusters")).build().prefixes
    check_family(str(demo_family / "trunk"), branches(demo_family), prefixes)
    with pytest.raises(FamilyError, match="not on cluster 0's shard"):
        check_family(str(demo_family / "trunk"), branches(demo_family)[::-1], prefixes)
    with pytest.raises(FamilyError, match="1 branches for 2 clusters"):
        check_family(str(demo_family / "trunk"), branches(demo_family)[:1], prefixes)


def test_cli_routes_each_item_to_its_nearest_specialist(demo_family, arc_file, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "megatron_split.cli", "eval",
           "--clusters", str(demo_family / "clusters"), "--trunk", str(demo_family / "trunk"),
           "--branches", *branches(demo_family), "--task", f"arc_like:arc={arc_file}",
           "--standard", str(demo_family / SPLIT / "standard"), "--oracle",
           "--heldout-samples", "16", "--out", str(out), "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| routed | arc_like | acc |" in done.stdout
    assert "| items | n | trunk | standard | routed | oracle |" in done.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    task_rows = [r for r in rows if r["eval"] == "arc_like"]
    got = {(r["model"], r.get("cluster"), r["metric"]): r for r in task_rows}

    # The same numbers, from the pieces: route, score with each branch, take acc.
    task = load_task("arc", arc_file)
    routing = Router.from_clusters(demo_family / "clusters").route([i.query for i in task.items])
    manifest = json.loads((demo_family / "clusters" / "clusters.json").read_text())
    home = {label: max(range(2), key=lambda c: manifest["clusters"][c]["labels"].get(label, 0))
            for label in {item.domain for item in task.items}}  # fmt: skip
    oracle = np.array([home[item.domain] for item in task.items])
    per_cluster = np.full((2, len(task.items), 2), np.nan)
    for cluster, path in enumerate(branches(demo_family)):
        lm = CheckpointLM.load(path)
        for i in np.flatnonzero((routing.nearest == cluster) | (oracle == cluster)):
            per_cluster[cluster, i] = [s.logprob for s in lm.loglikelihood(task.items[i].choices)]
    routed = mix(per_cluster, routing.clusters, routing.weights())
    expected = accuracy(task.items, routed)
    assert got[("routed", None, "acc")]["value"] == pytest.approx(expected["acc"][0])
    assert got[("routed", None, "acc_norm")]["value"] == pytest.approx(expected["acc_norm"][0])
    assert 0 <= got[("trunk", None, "acc")]["value"] <= 1
    assert 0 <= got[("standard", None, "acc")]["value"] <= 1
    # the oracle: each item by the specialist of its domain's cluster
    by_oracle = ChoiceScores(per_cluster[oracle, np.arange(len(task.items))])
    assert got[("oracle", None, "acc")]["value"] == pytest.approx(
        accuracy(task.items, by_oracle)["acc"][0])  # fmt: skip
    agree = (routing.nearest == oracle).mean()
    assert got[("router", None, "routing_acc")]["value"] == pytest.approx(agree)
    # per cluster: the items the router sends there, and every model on them
    for cluster in range(2):
        where = np.flatnonzero(routing.nearest == cluster)
        assert len(where), "the items should reach both clusters"
        subset = [task.items[i] for i in where]
        want = accuracy(subset, ChoiceScores(routed.logprob[where]))["acc"][0]
        assert got[("routed", cluster, "acc")]["value"] == pytest.approx(want)
        assert got[("routed", cluster, "acc")]["n"] == len(where)
        assert {got[(m, cluster, "acc")]["n"] for m in ("trunk", "standard", "oracle")} == {
            len(where)}  # fmt: skip
    assert sum(got[("trunk", c, "acc")]["n"] for c in range(2)) == len(task.items)
    heldout = {(r["model"], r["arm"], r["metric"]) for r in rows if r["eval"] == "heldout"}
    assert {("trunk", "trunk", "loss_mixture"), ("routed", "specialist", "loss_mixture"),
            ("standard", "standard", "loss_cluster_mean")} <= heldout  # fmt: skip
    standard = [r for r in rows if r["model"] == "standard" and r["metric"] == "loss"]
    assert [r["cluster"] for r in standard] == [0, 1] and standard[0]["arm"] == "standard"
    # the standard arm scored on the first 16 held-out samples vs the demo's 64: close, not equal
    assert standard[1]["value"] == pytest.approx(heldout_loss(demo_family, "standard", 1), rel=0.1)
    assert (out / "heldout_loss.png").stat().st_size > 0


def test_the_oracle_needs_a_domain_the_clusters_know(demo_family, arc_file, tmp_path):
    from eval.family import home_clusters, oracle_clusters

    manifest = json.loads((demo_family / "clusters" / "clusters.json").read_text())
    home = home_clusters(manifest)
    task = load_task("arc", arc_file)
    assert set(oracle_clusters(task, home)) <= {0, 1}
    lost = json.loads(arc_file.read_text().splitlines()[0])
    for change, found in (({"domain": "poetry"}, "has domain 'poetry'"), ({}, "has no domain")):
        record = {k: v for k, v in lost.items() if k != "domain"} | change
        path = tmp_path / f"{len(change)}.jsonl"
        path.write_text(json.dumps(record) + "\n")
        with pytest.raises(FamilyError, match=f"item q0 {found}; the oracle routes by"):
            oracle_clusters(load_task("arc", path), home)


def test_cli_reports_a_bad_task_file(demo_family, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    cmd = [sys.executable, "-m", "megatron_split.cli", "eval",
           "--clusters", str(demo_family / "clusters"), "--trunk", str(demo_family / "trunk"),
           "--branches", *branches(demo_family), "--task", f"arc={bad}",
           "--out", str(tmp_path / "eval")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "bad.jsonl:1: field 'choices' is missing" in done.stderr


@pytest.mark.parametrize("layout", [("2", "1"), ("1", "2")], ids=["tp2", "pp2"])
def test_eval_under_torchrun_splits_each_model_with_the_single_device_scores(
    demo_family, arc_file, tmp_path, layout
):
    """A model larger than one device: each model over two ranks (TP=2, or two pipeline
    stages) scores what it scores on one, held-out losses and task answers alike."""
    tensor, pipeline = layout
    args = ["eval", "--clusters", str(demo_family / "clusters"),
            "--trunk", str(demo_family / "trunk"), "--branches", *branches(demo_family),
            "--standard", str(demo_family / SPLIT / "standard"), "--task", f"arc={arc_file}",
            "--heldout-samples", "8", "--no-progress"]  # fmt: skip
    outputs = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        layout_args = ["--tensor", tensor, "--pipeline", pipeline] if nproc == 2 else []
        cmd = [*python(nproc), "-m", "megatron_split.cli", *args, *layout_args,
               "--out", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("Held-out loss") == 1  # rank 0 alone prints
        if nproc == 2:  # each rank holds a part of each model
            assert f"at TP={tensor}, PP={pipeline}: rank 1 holds" in done.stderr
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        outputs[nproc] = {(r["model"], r["eval"], r["metric"], r.get("cluster")): r["value"]
                          for r in rows}  # fmt: skip
    assert outputs[2].keys() == outputs[1].keys()
    for key, value in outputs[1].items():
        assert outputs[2][key] == pytest.approx(value, rel=1e-5), key
