"""The lm-evaluation-harness backend agrees with `msplit eval` on the same file and models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from eval.family import FamilyEvalConfig, evaluate_family  # noqa: E402
from eval.lm import CheckpointLM  # noqa: E402
from eval.mc import ChoiceScores, accuracy, requests_of  # noqa: E402
from eval.tasks import load_task  # noqa: E402
from tests.demo_family import branches  # noqa: E402
from tests.megatron_split.runs import python  # noqa: E402

pytestmark = pytest.mark.slow

# An lm-eval task over a local JSONL file in the flattened ARC format, with arc_easy's
# prompt: what a user writes to run a benchmark from disk.
TASK_YAML = """\
task: local_arc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def local_arc(demo_family, tmp_path_factory):
    corpus = sorted((demo_family / "corpus").glob("*.jsonl"))[0]
    texts = (json.loads(line)["text"] for line in corpus.read_text().splitlines())
    docs = [text for text in texts if len(text) > 200][:12]  # no empty choice
    root = tmp_path_factory.mktemp("lm_eval_task")
    records = [
        {
            "id": f"q{i}",
            "question": doc[:150],
            "choices": {
                "text": [doc[150:170], docs[i - 1][150:190], "no"],
                "label": ["A", "B", "C"],
            },  # fmt: skip
            "answerKey": "A",
        }
        for i, doc in enumerate(docs)
    ]
    data = root / "arc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "local_arc.yaml").write_text(TASK_YAML.format(path=data))
    return root


def harness(local_arc, monkeypatch, **model_args) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.lm_eval_backend import MSplitLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = lm_eval.simple_evaluate(
        model=MSplitLM(**model_args),
        tasks=["local_arc"],
        task_manager=TaskManager(include_path=str(local_arc)),
    )
    return out["results"]["local_arc"]


def harness_cli(local_arc, out, nproc: int = 1, stock: bool = False, **model_args) -> dict:
    """lm-eval's own command line in a process of its own: its ``lm_eval`` executable
    (``stock``) or ``msplit lm-eval`` (under torchrun with ``nproc`` processes); the
    results, and each document's log-likelihoods."""
    args = ",".join(f"{k}={v}" for k, v in model_args.items())
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if stock:
        command = [str(Path(sys.executable).parent / "lm_eval")]
    else:
        command = [*python(nproc), "-m", "megatron_split.cli", "lm-eval"]
    done = subprocess.run(
        [*command, "run", "--model", "megatron_split", "--model_args", args, "--tasks",
         "local_arc", "--include_path", str(local_arc), "--output_path", str(out),
         "--log_samples"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("|local_arc|") == 1, done.stdout  # one process reports
    if nproc > 1:  # each rank holds a part of the model
        assert f"at TP={model_args['tensor']}, PP={model_args['pipeline']}: rank 1" in done.stderr
    (results,) = out.rglob("results_*.json")
    (samples,) = out.rglob("samples_local_arc_*.jsonl")
    loglikelihoods = [json.loads(line)["resps"] for line in samples.read_text().splitlines()]
    return json.loads(results.read_text())["results"]["local_arc"] | {"resps": loglikelihoods}


def test_the_stock_lm_eval_executable_scores_a_checkpoint_as_our_own_evaluation(
    demo_family, local_arc, tmp_path
):
    got = harness_cli(local_arc, tmp_path / "out", stock=True, checkpoint=demo_family / "trunk")
    task = load_task("arc", local_arc / "arc.jsonl")
    requests, where = requests_of(task.items)
    scores = ChoiceScores.empty(task.items)
    lm = CheckpointLM.load(demo_family / "trunk")
    for (i, j), result in zip(where, lm.loglikelihood(requests), strict=True):
        scores.logprob[i, j] = result.logprob
    ours = accuracy(task.items, scores)
    assert got["acc,none"] == pytest.approx(ours["acc"][0])
    assert got["acc_norm,none"] == pytest.approx(ours["acc_norm"][0])


@pytest.mark.parametrize("layout", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
def test_the_cli_under_torchrun_splits_the_model_with_the_same_scores(
    demo_family, local_arc, tmp_path, layout
):
    tensor, pipeline = layout
    one = harness_cli(local_arc, tmp_path / "one", checkpoint=demo_family / "trunk")
    split = harness_cli(local_arc, tmp_path / "split", nproc=2, checkpoint=demo_family / "trunk",
                        tensor=tensor, pipeline=pipeline)  # fmt: skip
    assert len(one["resps"]) == 12 and all(len(doc) == 3 for doc in one["resps"])  # 3 choices
    assert split["acc,none"] == one["acc,none"]
    assert split["acc_norm,none"] == one["acc_norm,none"]
    for doc_split, doc_one in zip(split["resps"], one["resps"], strict=True):
        for (got,), (want,) in zip(doc_split, doc_one, strict=True):
            assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5, abs=1e-5)


def test_lm_evals_output_options_are_dropped_on_other_ranks():
    from eval.lm_eval_backend import without_outputs

    args = ["run", "--model", "msplit", "--output_path", "o", "-s", "--tasks", "t",
            "--output_path=o", "-o", "o", "--log_samples", "--limit", "3"]  # fmt: skip
    assert without_outputs(args) == ["run", "--model", "msplit", "--tasks", "t", "--limit", "3"]


def test_routed_family_scores_as_msplit_eval(demo_family, local_arc, monkeypatch, tmp_path):
    runs = branches(demo_family)
    got = harness(
        local_arc, monkeypatch, clusters=str(demo_family / "clusters"), branches=":".join(runs)
    )
    rows = evaluate_family(
        FamilyEvalConfig(
            clusters=str(demo_family / "clusters"),
            trunk=str(demo_family / "trunk"),
            branches=runs,
            out=str(tmp_path),
            heldout_samples=8,
            progress=False,
            tasks=[load_task("arc", local_arc / "arc.jsonl")],
        )
    )
    ours = {r["metric"]: r["value"] for r in rows
            if r["model"] == "routed" and r["eval"] == "arc" and "cluster" not in r}  # fmt: skip
    assert got["acc,none"] == pytest.approx(ours["acc"])
    assert got["acc_norm,none"] == pytest.approx(ours["acc_norm"])


def test_rolling_loglikelihood_covers_every_token_once(demo_family):
    from eval.lm_eval_backend import MSplitLM

    class Request:  # what lm-eval hands a backend: .args
        def __init__(self, *args):
            self.args = args

    lm = MSplitLM(checkpoint=str(demo_family / "trunk"))
    corpus = sorted((demo_family / "corpus").glob("*.jsonl"))[0]
    text = "\n".join(json.loads(line)["text"] for line in corpus.read_text().splitlines())[:3000]
    (total,) = lm.loglikelihood_rolling([Request(text)])
    ids = lm.tokenizer.encode(text)
    assert len(ids) > 2 * lm.seq_length  # several windows
    # The same sum without lm-eval's helpers: disjoint windows of seq_length tokens, each
    # token predicted once, after the document's end-of-document token. A window is
    # conditioned on the token before it; a short last window on as many tokens before it
    # as fill the model's length (lm-eval's rolling windows).
    trunk = CheckpointLM.load(demo_family / "trunk")
    document, length, expected = [lm.tokenizer.eod_id, *ids], lm.seq_length, 0.0
    for start in range(0, len(ids), length):
        target = ids[start : start + length]
        context = document[max(0, start + len(target) - length) : start + 1]
        (scored,) = trunk.loglikelihood_tokens([(context, target)])
        expected += scored.logprob
    assert np.isclose(total, expected, atol=1e-3)


GENERATION_YAML = """\
task: local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
output_type: generate_until
test_split: test
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 10
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.mark.parametrize("family", [False, True], ids=["checkpoint", "routed"])
def test_generation_tasks_answer_with_greedy_text(demo_family, tmp_path, monkeypatch, family):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from eval.lm_eval_backend import MSplitLM
    from eval.router import Router

    corpus = sorted((demo_family / "corpus").glob("*.jsonl"))[0]
    prompts = [json.loads(line)["text"][:80] for line in corpus.read_text().splitlines()[:6]]
    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": "x"}) + "\n" for p in prompts))
    (tmp_path / "local_gen.yaml").write_text(GENERATION_YAML.format(path=data))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_args = (
        {"clusters": str(demo_family / "clusters"), "branches": ":".join(branches(demo_family))}
        if family
        else {"checkpoint": str(demo_family / "trunk")}
    )
    out = lm_eval.simple_evaluate(
        model=MSplitLM(**model_args),
        tasks=["local_gen"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    got = {s["doc"]["prompt"]: s["resps"][0][0] for s in out["samples"]["local_gen"]}
    nearest = Router.from_clusters(demo_family / "clusters").route(prompts).clusters[:, 0]
    for model in set(nearest.tolist()) if family else [None]:
        lm = CheckpointLM.load(branches(demo_family)[model] if family else demo_family / "trunk")
        asked = [p for p, c in zip(prompts, nearest, strict=True) if not family or c == model]
        expected = lm.generate_text(asked, max_new_tokens=10, until=["."])
        assert [got[p] for p in asked] == expected
        assert not any("." in text for text in expected)


def test_bad_model_args_are_named_on_one_line(tmp_path, monkeypatch, capsys):
    from eval.lm_eval_backend import MSplitLM, main
    from megatron_split.config import ConfigError

    accepted = "checkpoint, clusters, branches, top_k, temperature, batch_size, tensor, pipeline"
    with pytest.raises(ConfigError, match=f"unknown argument checkpont; .* are {accepted}$"):
        MSplitLM(checkpont="runs/demo/trunk", device="cpu")  # device: lm-eval's own option
    monkeypatch.setattr(sys, "argv", sys.argv)  # main() runs lm-eval's parser on sys.argv
    missing = tmp_path / "not-a-run"
    args = ["run", "--model", "megatron_split", "--model_args", f"checkpoint={missing}"]
    assert main([*args, "--tasks", "arc_easy"]) == 2
    assert f"msplit lm-eval: --model_args: {missing}: no checkpoint here" in capsys.readouterr().err
