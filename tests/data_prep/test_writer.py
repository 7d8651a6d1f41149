from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from data_prep import plan as plan_module
from data_prep import writer as writer_module
from data_prep.shards import open_indexed_dataset, read_doc_table, read_manifest
from data_prep.tokenizers import load_tokenizer
from data_prep.writer import TokenizeConfig, tokenize, write_partition
from tests.data_prep.conftest import make_records, progress_lines, write_jsonl


def run(inputs: list[Path], prefix: Path, spec: str, **options) -> list[dict]:
    config = TokenizeConfig([str(p) for p in inputs], str(prefix), spec, progress=False,
                            **options)  # fmt: skip
    return tokenize(config)


def record_written_partitions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the partitions a run writes from now on, in the order it writes them."""
    written: list[int] = []

    def spy(job, report):
        written.append(job.index)
        return write_partition(job, report)

    monkeypatch.setattr(writer_module, "write_partition", spy)
    return written


def test_shard_ids_equal_the_tokenizers_encoding(tmp_path: Path, jsonl: Path, bpe_spec: str):
    (manifest,) = run([jsonl], tmp_path / "s", bpe_spec, append_eod=True)
    tokenizer = load_tokenizer(bpe_spec)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    dataset = IndexedDataset(str(tmp_path / "s"))
    assert len(dataset) == len(records) == manifest["documents"]
    for i, record in enumerate(records):
        assert dataset[i].tolist() == tokenizer.encode(record["text"]) + [tokenizer.eod_id]
    assert dataset.index.dtype == np.uint16
    assert manifest["tokens"] == int(dataset.sequence_lengths.sum())
    assert read_manifest(tmp_path / "s") == manifest


def test_split_sentences_are_sequences_and_the_eod_ends_each_documents_last(
    tmp_path: Path, bpe_spec: str
) -> None:
    from data_prep.sentences import SentenceSplitterConfig

    texts = ["Mr. Smith met Dr. Jones. The court held that the contract was void.",
             "One sentence only.", "A first one. A second one! A third one?"]  # fmt: skip
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in texts])
    run([path], tmp_path / "s", bpe_spec, split_sentences=True, append_eod=True)
    tokenizer, splitter = load_tokenizer(bpe_spec), SentenceSplitterConfig("english").build()
    expected = []
    for text in texts:
        sentences = [tokenizer.encode(sentence) for sentence in splitter.split(text)]
        expected.append(sentences[:-1] + [sentences[-1] + [tokenizer.eod_id]])
    dataset = IndexedDataset(str(tmp_path / "s"))
    bounds = dataset.document_indices.tolist()
    assert bounds == np.cumsum([0] + [len(e) for e in expected]).tolist()
    for doc, sequences in enumerate(expected):
        found = [dataset[i].tolist() for i in range(bounds[doc], bounds[doc + 1])]
        assert found == sequences


def test_a_document_larger_than_a_piece_gives_the_ids_of_its_whole_encoding(
    tmp_path: Path, gpt2_dir: Path
) -> None:
    """GPT-2 encodes in worker processes (tiktoken), a 2.2 MB document in 1 MB pieces; the
    shard holds what transformers' GPT-2 tokenizer gives for each whole text."""
    from transformers import GPT2TokenizerFast

    records = make_records(40, seed=3)
    records[7]["text"] = " ".join(r["text"] for r in make_records(20000, seed=4))
    assert len(records[7]["text"]) > 2 * (1 << 20)
    jsonl = write_jsonl(tmp_path / "big.jsonl", records)
    run([jsonl], tmp_path / "s", f"gpt2:{gpt2_dir}", workers=2, partitions=2, append_eod=True)
    reference = GPT2TokenizerFast(str(gpt2_dir / "encoder.json"), str(gpt2_dir / "vocab.bpe"))
    dataset = IndexedDataset(str(tmp_path / "s"))
    for i, record in enumerate(records):
        ids = reference(record["text"], add_special_tokens=False)["input_ids"] + [50256]
        assert dataset[i].tolist() == ids


def test_manifest_and_doc_table(tmp_path: Path, jsonl: Path, bpe_spec: str) -> None:
    (manifest,) = run([jsonl], tmp_path / "s", bpe_spec)
    assert manifest["format"] == "megatron-split/shard/v1"
    assert manifest["vocab_size"] == load_tokenizer(bpe_spec).vocab_size
    assert manifest["eod_id"] == 0 and manifest["skipped"] == {}
    (entry,) = manifest["inputs"]
    assert entry["path"] == str(jsonl) and entry["size"] == jsonl.stat().st_size
    assert entry["sha256"] == hashlib.sha256(jsonl.read_bytes()).hexdigest()
    table = read_doc_table(tmp_path / "s").to_pylist()
    dataset = open_indexed_dataset(tmp_path / "s")
    assert [row["doc"] for row in table] == list(range(200))
    assert [row["id"] for row in table] == [f"doc-{i}" for i in range(200)]
    assert {row["label"] for row in table} == {"synthetic"}
    assert [row["line"] for row in table] == list(range(1, 201))
    assert [row["n_tokens"] for row in table] == [len(dataset[i]) for i in range(200)]


def test_doc_table_keeps_missing_labels_and_any_id(tmp_path: Path, bpe_spec: str) -> None:
    records = make_records(30)
    for i, record in enumerate(records):
        record["id"] = f"dóc-{i}-東京-😀" if i % 2 else ""
        if i % 3:
            del record["label"]
    run([write_jsonl(tmp_path / "d.jsonl", records)], tmp_path / "s", bpe_spec, workers=2,
        partitions=3, executor="processes")  # fmt: skip
    table = read_doc_table(tmp_path / "s").to_pylist()
    assert [row["id"] for row in table] == [r["id"] for r in records]
    assert [row["label"] for row in table] == [r.get("label") for r in records]


def test_string_columns_past_their_offsets_reach_are_written_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    monkeypatch.setattr(writer_module, "_STRING_BYTES", 10)  # 2**31 - 1 in earnest
    values = ["abcd", None, "é" * 3, "", "x" * 12, "yz", None, "tail"]
    column = writer_module._string_column(values, pa)
    assert column.type == pa.string() and column.num_chunks > 1
    pq.write_table(pa.table({"id": column}), tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").column("id").to_pylist() == values
    assert writer_module._string_column(values[:2], pa).to_pylist() == values[:2]  # one array


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_workers_and_partitions_do_not_change_the_bytes(
    tmp_path: Path, bpe_spec: str, executor: str
) -> None:
    inputs = [write_jsonl(tmp_path / f"{i}.jsonl", make_records(150, seed=i)) for i in range(3)]
    gz = tmp_path / "3.jsonl.gz"
    gz.write_bytes(gzip.compress(inputs[0].read_bytes()))
    inputs.append(gz)
    run(inputs, tmp_path / "one", bpe_spec, append_eod=True, workers=1, partitions=1)
    run(inputs, tmp_path / "two", bpe_spec, append_eod=True, workers=2, partitions=5,
        executor=executor)  # fmt: skip
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"two{suffix}").read_bytes()
    one, two = (pq.read_table(tmp_path / f"{n}.docs.parquet") for n in ("one", "two"))
    assert one.equals(two)
    assert not (tmp_path / "two.parts").exists()


def test_several_json_keys_write_one_shard_each(tmp_path: Path, bpe_spec: str) -> None:
    records = [{"title": f"Title {i}.", "text": r["text"]} for i, r in enumerate(make_records(20))]
    path = write_jsonl(tmp_path / "k.jsonl", records)
    manifests = run([path], tmp_path / "s", bpe_spec, json_keys=("title", "text"))
    assert [m["json_key"] for m in manifests] == ["title", "text"]
    tokenizer = load_tokenizer(bpe_spec)
    for key in ("title", "text"):
        dataset = open_indexed_dataset(tmp_path / f"s_{key}")
        assert [dataset[i].tolist() for i in range(20)] == [
            tokenizer.encode(r[key]) for r in records
        ]


def test_int32_tokens_for_large_vocabularies(tmp_path: Path, jsonl: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1} | {f"w{i}": i + 2 for i in range(70000)}
    words = json.loads(jsonl.read_text().splitlines()[0])["text"].split()
    vocab |= {w: 70002 + i for i, w in enumerate(dict.fromkeys(words))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "big.json"))
    (manifest,) = run([jsonl], tmp_path / "s", f"hf:{tmp_path / 'big.json'}")
    dataset = IndexedDataset(str(tmp_path / "s"))
    assert manifest["dtype"] == "int32" and dataset.index.dtype == np.int32
    assert dataset[0].max() >= 70002


def test_split_sentences_keeps_sentence_lengths(tmp_path: Path, bpe_spec: str) -> None:
    texts = ["Mr. Smith met Dr. Jones. The court held. It was void.", "One sentence only"]
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in texts])
    (manifest,) = run([path], tmp_path / "s", bpe_spec, split_sentences=True, append_eod=True,
                      workers=2, partitions=2)  # fmt: skip
    dataset = IndexedDataset(str(tmp_path / "s"))
    tokenizer = load_tokenizer(bpe_spec)
    sentences = [["Mr. Smith met Dr. Jones.", " The court held.", " It was void."],
                 ["One sentence only"]]  # fmt: skip
    assert dataset.document_indices.tolist() == [0, 3, 4]
    expected = [tokenizer.encode(s) for doc in sentences for s in doc]
    expected[2].append(tokenizer.eod_id)
    expected[3].append(tokenizer.eod_id)
    assert [dataset[i].tolist() for i in range(4)] == expected
    assert manifest["split_sentences"] and manifest["language"] == "english"


def test_keep_newlines_makes_other_shards_only_when_splitting_sentences(
    tmp_path: Path, bpe_spec: str
) -> None:
    texts = ["Mr. Smith met Dr. Jones.\nThe court held.\n\nIt was void.", "One. Two!\nThree."]
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": t} for t in texts])
    prefix = tmp_path / "s"
    (whole,) = run([path], prefix, bpe_spec)
    assert whole["keep_newlines"] is None
    # nothing to split, nothing changes: the shards are up to date
    assert run([path], prefix, bpe_spec, keep_newlines=True) == [whole]
    (split,) = run([path], prefix, bpe_spec, split_sentences=True, partitions=2)
    shard = [(tmp_path / f"s{suffix}").read_bytes() for suffix in (".bin", ".idx")]
    (kept,) = run([path], prefix, bpe_spec, split_sentences=True, keep_newlines=True, partitions=2)
    assert (split["keep_newlines"], kept["keep_newlines"]) == (False, True)
    assert kept["fingerprint"] != split["fingerprint"]
    # rewritten: the whitespace between sentences ends the sentence before it
    assert [(tmp_path / f"s{suffix}").read_bytes() for suffix in (".bin", ".idx")] != shard


def test_rerun_is_a_no_op_and_input_change_rewrites(tmp_path: Path, bpe_spec: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_records(30))
    (first,) = run([path], tmp_path / "s", bpe_spec)
    stamp = (tmp_path / "s.bin").stat().st_mtime_ns
    (again,) = run([path], tmp_path / "s", bpe_spec)
    assert again == first and (tmp_path / "s.bin").stat().st_mtime_ns == stamp
    write_jsonl(path, make_records(31))
    (changed,) = run([path], tmp_path / "s", bpe_spec)
    assert changed["documents"] == 31 and changed["fingerprint"] != first["fingerprint"]


def test_restart_skips_finished_partitions(
    tmp_path: Path, bpe_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = [write_jsonl(tmp_path / f"{i}.jsonl", make_records(40, seed=i)) for i in range(3)]
    config = TokenizeConfig([str(p) for p in inputs], str(tmp_path / "s"), bpe_spec,
                            partitions=3, progress=False)  # fmt: skip
    writer = config.build()
    *_, jobs = writer.plan()
    assert len(jobs) == 3
    write_partition(jobs[0], lambda *_: None)  # a job killed after its first partition...
    (writer.parts_dir / "part-00001.key0.tmp.bin").write_bytes(b"half-written")  # ...and more
    (writer.parts_dir / "merged.key0.bin").write_bytes(b"its shard, begun, never finished")
    written = record_written_partitions(monkeypatch)
    (manifest,) = writer.run()
    assert written == [1, 2]
    run(inputs, tmp_path / "fresh", bpe_spec, partitions=1)
    assert (tmp_path / "s.bin").read_bytes() == (tmp_path / "fresh.bin").read_bytes()
    assert manifest["documents"] == 120 and manifest["documents_read"] == 120
    assert not writer.parts_dir.exists()


def test_a_partition_is_reused_while_its_own_bytes_are_unchanged(
    tmp_path: Path, bpe_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition's fingerprint hashes the bytes it reads, not its whole file: an edit in
    the second half of a file rewrites the second partition only."""
    records = make_records(60)
    path = write_jsonl(tmp_path / "d.jsonl", records)
    config = TokenizeConfig([str(path)], str(tmp_path / "s"), bpe_spec, partitions=2,
                            progress=False)  # fmt: skip
    writer = config.build()
    *_, jobs = writer.plan()
    for job in jobs:
        write_partition(job, lambda *_: None)
    records[-1]["text"] = records[-1]["text"].swapcase()  # same length: the same cuts
    write_jsonl(path, records)
    written = record_written_partitions(monkeypatch)
    (manifest,) = writer.run()
    assert written == [1]
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    run([path], tmp_path / "fresh", bpe_spec, partitions=1)
    assert (tmp_path / "s.bin").read_bytes() == (tmp_path / "fresh.bin").read_bytes()


def test_inputs_are_hashed_first_only_when_published_shards_may_be_up_to_date(
    tmp_path: Path, bpe_spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh run starts its workers at once and hashes its inputs (for the manifest) as
    they encode; a rerun over published shards hashes them first, to find it has nothing
    to do."""
    path = write_jsonl(tmp_path / "d.jsonl", make_records(30))
    config = TokenizeConfig([str(path)], str(tmp_path / "s"), bpe_spec, progress=False)
    hashed = []
    whole_file = plan_module.sha256_of
    monkeypatch.setattr(plan_module, "sha256_of", lambda p: hashed.append(p) or whole_file(p))
    writer = config.build()
    _, plan, content, _ = writer.plan()
    assert writer._up_to_date(plan, content) is None and hashed == []
    (manifest,) = writer.run()
    assert hashed == [str(path)]
    _, plan, content, _ = writer.plan()
    assert writer._up_to_date(plan, content) == [manifest] and hashed == [str(path)] * 2


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing"])
def test_a_partition_whose_files_changed_since_its_marker_is_rewritten(
    tmp_path: Path, bpe_spec: str, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """Partitions are not synced to disk: a crash may leave a marker whose files did not
    survive whole, which its checksums reveal."""
    inputs = [write_jsonl(tmp_path / f"{i}.jsonl", make_records(40, seed=i)) for i in range(2)]
    config = TokenizeConfig([str(p) for p in inputs], str(tmp_path / "s"), bpe_spec,
                            partitions=2, progress=False)  # fmt: skip
    writer = config.build()
    *_, jobs = writer.plan()
    for job in jobs:
        write_partition(job, lambda *_: None)
    damaged = Path(f"{jobs[1].prefix(0)}.bin")
    data = damaged.read_bytes()
    if damage == "flipped":
        damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "truncated":
        damaged.write_bytes(data[:-2])
    else:
        damaged.unlink()
    written = record_written_partitions(monkeypatch)
    writer.run()
    assert written == [1]
    run(inputs, tmp_path / "fresh", bpe_spec, partitions=1)
    assert (tmp_path / "s.bin").read_bytes() == (tmp_path / "fresh.bin").read_bytes()


def test_array_tasks_write_their_partitions_and_one_merge_publishes_the_same_shard(
    tmp_path: Path, bpe_spec: str
) -> None:
    inputs = [write_jsonl(tmp_path / f"{i}.jsonl", make_records(40, seed=i)) for i in range(3)]
    prefix = tmp_path / "s"
    parts = Path(f"{prefix}.parts")
    common = {"append_eod": True, "partitions": 6}
    # Another task's half-written partition (1) survives task 0's clean-up of its own (0).
    parts.mkdir()
    (parts / "part-00000.key0.tmp.bin").write_bytes(b"task 0, killed")
    (parts / "part-00001.key0.tmp.bin").write_bytes(b"task 1, still writing")
    assert run(inputs, prefix, bpe_spec, task=0, tasks=3, **common) == []
    assert sorted(p.name for p in parts.glob("*.done.json")) == [
        "part-00000.done.json", "part-00003.done.json", "task-0-of-3.done.json"]  # fmt: skip
    assert (parts / "part-00001.key0.tmp.bin").exists()
    assert not (parts / "part-00000.key0.tmp.bin").exists()
    assert not Path(f"{prefix}.bin").exists()  # no merge in an array task
    run(inputs, prefix, bpe_spec, task=2, tasks=3, **common)
    (manifest,) = run(inputs, prefix, bpe_spec, **common)  # the merge writes task 1's share too
    run(inputs, tmp_path / "one", bpe_spec, append_eod=True)
    for suffix in (".bin", ".idx"):
        assert Path(f"{prefix}{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()
    assert manifest["documents"] == manifest["documents_read"] == 120
    assert not parts.exists()
    assert run(inputs, prefix, bpe_spec, task=1, tasks=3, **common) == [manifest]  # merged: done


def test_array_tasks_need_one_plan(tmp_path: Path, bpe_spec: str) -> None:
    with pytest.raises(ValueError, match="tasks > 1 needs partitions"):
        TokenizeConfig(["x.jsonl"], str(tmp_path / "s"), bpe_spec, task=0, tasks=2)
    with pytest.raises(ValueError, match="task must be in 0..tasks-1, got task 2 of 2"):
        TokenizeConfig(["x.jsonl"], str(tmp_path / "s"), bpe_spec, task=2, tasks=2, partitions=4)


def test_gpt_dataset_builds_on_a_shard(tmp_path: Path, bpe_spec: str) -> None:
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import Split

    from data_prep.tokenizers import megatron_tokenizer

    path = write_jsonl(tmp_path / "d.jsonl", make_records(100))
    (manifest,) = run([path], tmp_path / "s", bpe_spec, append_eod=True)
    dataset = open_indexed_dataset(tmp_path / "s")
    config = GPTDatasetConfig(
        random_seed=1234, sequence_length=32, split="100,0,0",
        tokenizer=megatron_tokenizer(vocab_size=manifest["vocab_size"],
                                     eod_id=manifest["eod_id"]),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=True,
    )  # fmt: skip
    gpt = GPTDataset(dataset, str(tmp_path / "s"), np.arange(len(dataset), dtype=np.int32),
                     None, Split.train, config)  # fmt: skip
    assert len(gpt) == (manifest["tokens"] - 1) // 32
    stream = np.concatenate([dataset[int(d)] for d in gpt.document_index])
    sample = gpt[0]
    tokens = sample["tokens"].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(stream, 32)
    assert (windows == tokens).all(axis=1).any()
    assert (sample["loss_mask"].numpy()[tokens == manifest["eod_id"]] == 0).all()


def test_sentencepiece_shards_with_worker_processes(
    tmp_path: Path, jsonl: Path, sentencepiece_model: Path
) -> None:
    spec = f"sentencepiece:{sentencepiece_model}"
    (manifest,) = run([jsonl], tmp_path / "s", spec, append_eod=True, workers=2)
    tokenizer = load_tokenizer(spec)
    dataset = IndexedDataset(str(tmp_path / "s"))
    texts = [json.loads(line)["text"] for line in jsonl.read_text().splitlines()]
    assert [dataset[i].tolist() for i in range(len(texts))] == [
        tokenizer.encode(t) + [tokenizer.eod_id] for t in texts
    ]
    assert manifest["tokenizer"]["kind"] == "sentencepiece" and manifest["eod_id"] == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_log_interval_prints_a_line_each_time_that_many_more_documents_are_done(
    tmp_path: Path, jsonl: Path, bpe_spec: str, capsys: pytest.CaptureFixture[str], workers: int
) -> None:
    config = TokenizeConfig([str(jsonl)], str(tmp_path / "s"), bpe_spec, workers=workers,
                            partitions=4, batch_mb=1e-9, log_interval=50)  # fmt: skip
    (manifest,) = tokenize(config)  # batches of one document: a line at every 50th
    lines = progress_lines(capsys.readouterr().err)
    assert [int(m[1].replace(",", "")) for m in lines] == [50, 100, 150, 200]
    assert lines[-1][2] == f"{manifest['text_bytes'] / 1e6:,.1f}"
    assert float(lines[-1][3]) > 0 and int(lines[-1][4].replace(",", "")) > 0
