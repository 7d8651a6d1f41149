"""Import from Hugging Face: the imported checkpoint gives transformers' logits, exports back
to the same tensors (imported in one process or over TP=2 x PP=2 ranks), trains at TP=2 as at
TP=1, and bad model directories and layouts are refused by name."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_split.checkpoint import read_meta, resolve_checkpoint
from megatron_split.checkpoint.hf_export import export_hf
from megatron_split.checkpoint.hf_import import HFModel, import_hf
from megatron_split.config import ConfigError
from tests.megatron_split.hf_models import FAMILIES, random_model, smollm2
from tests.megatron_split.runs import env, metrics, python, train

TEXT = "The court held that the contract was void. Mr. Smith met Dr. Jones in Washington.\n"


def import_cli(source: Path, run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "megatron_split.cli", "import-hf", str(source), str(run)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def imported_logits_match(hf_model, run: Path, atol: float = 1e-4) -> None:
    from eval.lm import CheckpointLM

    ours = CheckpointLM.load(run)
    ids = ours.tokenizer.encode(TEXT)
    tokens_1S = torch.tensor([ids])
    with torch.no_grad():
        theirs = hf_model(tokens_1S).logits.float()
    torch.testing.assert_close(ours.logits(tokens_1S), theirs, atol=atol, rtol=1e-4)


def assert_same_tensors(original_dir: Path, exported_dir: Path) -> None:
    """The exported model holds the original's very tensors (its buffers aside)."""
    from safetensors.torch import load_file

    original = load_file(original_dir / "model.safetensors")
    exported = load_file(exported_dir / "model.safetensors")
    original = {k: v for k, v in original.items() if not k.endswith((".attn.bias", "masked_bias"))}
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(exported[name], tensor.float()), name


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_an_imported_model_gives_transformers_logits_and_exports_to_the_same_tensors(
    family, tokenizer_dir, tmp_path
):
    from transformers import AutoTokenizer

    hf_model = random_model(family, tokenizer_dir, tmp_path / "hf")
    done = import_cli(tmp_path / "hf", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = read_meta(resolve_checkpoint(tmp_path / "run"))
    assert meta["step"] == 0 and meta["optimizer"] is False
    assert meta["lineage"]["imported_from"] == str((tmp_path / "hf").resolve())
    assert meta["tokenizer"]["path"] == str(tmp_path / "run" / "tokenizer.json")
    imported_logits_match(hf_model, tmp_path / "run")
    ours = AutoTokenizer.from_pretrained(tmp_path / "run")(TEXT, add_special_tokens=False)
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")(TEXT, add_special_tokens=False)
    assert ours.input_ids == theirs.input_ids

    done = subprocess.run(
        [sys.executable, "-m", "megatron_split.cli", "export-hf", str(tmp_path / "run"),
         str(tmp_path / "back")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_tensors(tmp_path / "hf", tmp_path / "back")


@pytest.mark.slow
def test_a_released_model_imports_with_transformers_logits_and_its_tokenizer(tmp_path):
    """SmolLM2-135M-Instruct (a 30-layer GQA Llama), from the GGUF file it is released in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2()
    done = import_cli(gguf, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    imported_logits_match(hf, tmp_path / "run")
    theirs = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert read_meta(resolve_checkpoint(tmp_path / "run"))["tokenizer"]["eod"] == theirs.eos_token
    from data_prep.tokenizers import load_tokenizer

    ours = load_tokenizer(f"hf:{tmp_path / 'run'}")
    assert ours.encode(TEXT) == theirs(TEXT, add_special_tokens=False).input_ids
    exported = AutoTokenizer.from_pretrained(export_hf(tmp_path / "run", tmp_path / "hf"))
    assert theirs.chat_template and exported.chat_template == theirs.chat_template


@pytest.mark.slow
def test_a_gguf_is_read_a_dequantized_tensor_at_a_time_as_transformers_reads_it():
    from transformers import AutoModelForCausalLM

    gguf = smollm2()
    tensors = HFModel(gguf).tensors()
    assert not tensors.read_names  # opening the file dequantizes nothing
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32).state_dict()  # fmt: skip
    shapes = tensors.shapes()
    # the output layer is tied to the embedding, which the file holds once
    assert sorted(shapes) == sorted(name for name in theirs if name != "lm_head.weight")
    for name, shape in shapes.items():
        ours = tensors.read(name)
        assert ours.shape == shape and torch.equal(ours, theirs[name]), name


@pytest.mark.slow
def test_a_gguf_imports_over_pp2_each_stage_reading_its_layers(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    gguf = smollm2()
    done = subprocess.run(
        [*python(2), "-m", "megatron_split.cli", "import-hf", str(gguf), str(tmp_path / "run"),
         "--pipeline", "2"], capture_output=True, text=True, timeout=600, env=env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reads = re.findall(r"rank (\d): read (\d+) of (\d+) Hugging Face tensors", done.stderr)
    assert sorted(rank for rank, _, _ in reads) == ["0", "1"]
    assert all(int(read) < int(total) for _, read, total in reads), reads
    exported = load_file(export_hf(tmp_path / "run", tmp_path / "back") / "model.safetensors")
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32).state_dict()  # fmt: skip
    assert set(theirs) - set(exported) <= {"lm_head.weight"}  # tied to the embedding
    for name, tensor in exported.items():
        assert torch.equal(tensor, theirs[name]), name


@pytest.mark.slow
def test_an_imported_model_trains_at_tp2_as_at_tp1_on_shards_of_its_tokenizer(
    tokenizer_dir, tmp_path
):
    from data_prep.cli import main as data_cli
    from tests.data_prep.conftest import make_records, write_jsonl

    random_model("llama-gqa-tied", tokenizer_dir, tmp_path / "hf")
    assert import_cli(tmp_path / "hf", tmp_path / "model").returncode == 0
    corpus = write_jsonl(tmp_path / "corpus.jsonl", make_records(200, seed=3))
    shard = tmp_path / "shard"
    assert data_cli(["tokenize", "--input", str(corpus), "--output-prefix", str(shard),
                     "--tokenizer", f"hf:{tmp_path / 'model'}", "--append-eod",
                     "--no-progress"]) == 0  # fmt: skip
    losses = {}
    for tp in (1, 2):
        run = tmp_path / f"tp{tp}"
        train([f"run_dir={run}", f"data.paths=[{shard}]", f"init.checkpoint={tmp_path / 'model'}",
               "init.model_from_parent=true", "model.seq_length=64", f"parallel.tensor={tp}",
               "train.steps=1", "train.global_batch=4", "train.micro_batch=2",
               "train.log_every=1", "train.eval_every=0", "train.tensorboard=false",
               "train.progress=false", "optim.schedule.warmup_steps=0"], nproc=tp)  # fmt: skip
        losses[tp] = metrics(run)[1]
        assert read_meta(resolve_checkpoint(run))["lineage"]["parent_lineage"]["architecture"] == (
            "llama"
        )
    assert losses[2] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2-qkv-bias", "gpt2"])
def test_an_import_over_tp2_pp2_reads_only_each_ranks_layers_and_equals_the_model(
    family, tokenizer_dir, tmp_path
):
    """Four ranks each read their stage's tensors and keep their tensor-parallel slice; the
    checkpoint they save together exports back to the original tensors."""
    random_model(family, tokenizer_dir, tmp_path / "hf")
    done = subprocess.run(
        [*python(4), "-m", "megatron_split.cli", "import-hf", str(tmp_path / "hf"),
         str(tmp_path / "run"), "--tensor", "2", "--pipeline", "2"],
        capture_output=True, text=True, timeout=600, env=env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reads = re.findall(r"rank (\d): read (\d+) of (\d+) Hugging Face tensors", done.stderr)
    assert sorted(rank for rank, _, _ in reads) == ["0", "1", "2", "3"]
    assert all(int(read) < int(total) for _, read, total in reads), reads
    assert done.stdout.count("written:") == 1
    parallel = read_meta(resolve_checkpoint(tmp_path / "run"))["config"]["parallel"]
    assert (parallel["tensor"], parallel["pipeline"]) == (2, 2)

    export_hf(tmp_path / "run", tmp_path / "back")
    assert_same_tensors(tmp_path / "hf", tmp_path / "back")


def test_an_import_layout_that_cannot_hold_the_model_is_refused_before_anything_is_written(
    tokenizer_dir, tmp_path
):
    source = write_model(tmp_path, "llama-gqa-tied", tokenizer_dir)
    with pytest.raises(ConfigError, match="vocab_size=400 does not split over --tensor 3"):
        import_hf(source, tmp_path / "run", tensor=3)
    with pytest.raises(ConfigError, match="needs 2 processes, this run has 1: start it with "
                                          "torchrun --nproc-per-node 2"):  # fmt: skip
        import_hf(source, tmp_path / "run", pipeline=2)
    assert not (tmp_path / "run").exists()


def test_shards_of_another_tokenizer_are_refused_by_name(tokenizer_dir, tmp_path, shards):
    from megatron_split.data.datasets import check_shards_tokenizer

    meta = {"tokenizer": {"kind": "hf", "path": str(tokenizer_dir / "tokenizer.json"),
                          "eod": "<|endoftext|>"}}  # fmt: skip
    with pytest.raises(ConfigError, match=f"{shards[0]} was tokenized with .* reads"):
        check_shards_tokenizer(meta, shards, "the model")


def write_model(tmp_path: Path, family: str, tokenizer_dir: Path, **config_changes) -> Path:
    out = tmp_path / "hf"
    random_model(family, tokenizer_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | config_changes))
    return out


@pytest.mark.parametrize(
    ("family", "changes", "message"),
    [
        ("llama-gqa-tied", {"architectures": ["FalconForCausalLM"]}, "architectures=.*Falcon"),
        ("mistral", {"sliding_window": 16}, "sliding_window=16: sliding-window attention"),
        ("llama-gqa-tied", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
         "rope_type='yarn'"),
        ("llama-gqa-tied", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ("llama-gqa-tied", {"attention_bias": True}, "mlp_bias=False"),
        ("llama-gqa-tied", {"intermediate_size": 80}, "gate_proj.weight has shape"),
        ("llama-gqa-tied", {"num_hidden_layers": 3}, "model.layers.2.self_attn.q_proj.weight is "
                                                      "missing"),
        ("llama-gqa-tied", {"num_hidden_layers": 1}, "no place for: model.layers.1"),
    ],
    ids=["architecture", "sliding-window", "rope-kind", "activation", "bias-mix", "shape",
         "missing", "extra"],
)  # fmt: skip
def test_bad_model_directories_are_refused_by_name_and_write_nothing(
    family, changes, message, tokenizer_dir, tmp_path
):
    source = write_model(tmp_path, family, tokenizer_dir, **changes)
    with pytest.raises(ConfigError, match=message):
        import_hf(source, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_tokenizer_or_eos_is_named(tokenizer_dir, tmp_path):
    source = tmp_path / "hf"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
    looked_for = "(looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt)"
    with pytest.raises(ConfigError, match=f"no tokenizer files {re.escape(looked_for)}"):
        HFModel(source).tokenizer()
    shutil.copytree(tokenizer_dir, source, dirs_exist_ok=True)
    config = json.loads((source / "tokenizer_config.json").read_text())
    del config["eos_token"]
    (source / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no EOS token: set eos_token in .*tokenizer_config.json"):
        HFModel(source).tokenizer()


def test_help_shows_the_defaults(capsys):
    from megatron_split.checkpoint.hf_import import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--dtype {fp32,bf16} the parameters' dtype in the checkpoint's model config " \
        "(default: fp32)" in text  # fmt: skip
