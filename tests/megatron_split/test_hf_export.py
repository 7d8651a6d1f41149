"""Export to Hugging Face: transformers loads the directory and gives the checkpoint's logits."""

import json
import subprocess
import sys

import pytest
import torch

from megatron_split.checkpoint import hf_export
from megatron_split.checkpoint.hf_convert import hf_config
from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig
from tests.megatron_split.runs import train

TEXT = "def main():\n    return 'The President said the court is open on Monday.'\n"


def hf_logits_match(checkpoint, out) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eval.lm import CheckpointLM

    done = subprocess.run(
        [sys.executable, "-m", "megatron_split.cli", "export-hf", str(checkpoint), str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ours = CheckpointLM.load(checkpoint)
    ids = ours.tokenizer.encode(TEXT)
    assert AutoTokenizer.from_pretrained(out)(TEXT, add_special_tokens=False).input_ids == ids
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokens_1S = torch.tensor([ids])
    with torch.no_grad():
        theirs = hf(tokens_1S).logits.float()
    torch.testing.assert_close(theirs, ours.logits(tokens_1S), atol=1e-4, rtol=1e-4)
    source = json.loads((out / "msplit_source.json").read_text())
    assert source["step"] == ours.meta["step"]


@pytest.mark.slow
def test_exported_trunk_gives_the_checkpoints_logits_and_tokens(demo_family, tmp_path):
    hf_logits_match(demo_family / "trunk", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)  # GQA


def train_tiny(demo_family, run, *overrides: str, nproc: int = 1) -> None:
    shard = sorted((demo_family / "clusters").glob("*.idx"))[0].with_suffix("")
    train(["configs/tiny.yaml", f"run_dir={run}", f"data.paths=[{shard}]", "train.steps=4",
           "train.eval_every=0", "optim.schedule.warmup_steps=1", "train.progress=false",
           "train.tensorboard=false", *overrides], nproc=nproc)  # fmt: skip


@pytest.mark.slow
def test_a_tensor_parallel_checkpoint_exports(demo_family, tmp_path):
    train_tiny(demo_family, tmp_path / "tp2", "parallel.tensor=2", nproc=2)
    hf_logits_match(tmp_path / "tp2", tmp_path / "hf")


GPT2_SHAPE = ["model.position_embedding=learned", "model.normalization=LayerNorm",
              "model.activation=gelu", "model.num_query_groups=4"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "overrides"),
    [
        ("llama", ["model.bias=true"]),
        ("gpt2", GPT2_SHAPE + ["model.bias=true"]),
        ("gpt2", GPT2_SHAPE + ["model.bias=false", "model.tie_embeddings=false"]),
    ],
    ids=["llama-biases", "gpt2-biases", "gpt2-no-biases-untied"],
)
def test_other_shapes_export_with_the_checkpoints_logits(demo_family, tmp_path, shape, overrides):
    train_tiny(demo_family, tmp_path / "run", *overrides)
    hf_logits_match(tmp_path / "run", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == shape


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"normalization": "LayerNorm"}, "only Llama-style"),
        ({"activation": "gelu"}, "only Llama-style"),
        ({"position_embedding": "learned"}, "model.position_embedding='learned'"),
        (
            dict(
                position_embedding="learned",
                normalization="LayerNorm",
                activation="gelu",
                num_query_groups=2,
            ),
            "GPT-2 has no grouped-query attention",
        ),  # fmt: skip
    ],
)
def test_models_without_a_hugging_face_counterpart_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        hf_config(ModelConfig(vocab_size=256, num_attention_heads=4, **fields), 0)


def test_export_refuses_an_output_directory_holding_other_files(tmp_path, capsys):
    out = tmp_path / "v"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    assert hf_export.main([str(tmp_path / "no-run"), str(out)]) == 2
    error = capsys.readouterr().err
    assert str(out) in error and "--force" in error and hf_export.SOURCE in error
    assert (out / "notes.txt").read_text() == "precious" and (out / "sub").is_dir()


@pytest.fixture
def fake_export(monkeypatch):
    """export_hf without a model: a stand-in checkpoint, and an export of two files (the
    second write fails when asked to)."""
    fail = {"now": False}

    def write(trained, directory):
        (directory / hf_export.SOURCE).write_text(trained)
        if fail["now"]:
            raise OSError("disk full")
        (directory / "model.safetensors").write_text("weights")

    monkeypatch.setattr("megatron_split.inference.load_trained_model", lambda path: str(path))
    monkeypatch.setattr(hf_export, "_write_export", write)
    return fail


def test_export_replaces_a_previous_export_and_anything_with_force(tmp_path, fake_export):
    out = tmp_path / "parent" / "hf"
    hf_export.export_hf("first", out)
    hf_export.export_hf("second", out)  # a previous export: replaced
    assert (out / hf_export.SOURCE).read_text() == "second"
    (out / hf_export.SOURCE).unlink()
    with pytest.raises(ConfigError, match="give --force"):
        hf_export.export_hf("third", out)
    hf_export.export_hf("third", out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", hf_export.SOURCE]
    assert [p.name for p in out.parent.iterdir()] == ["hf"]  # no temporary left


def test_a_failed_export_leaves_the_previous_one_whole(tmp_path, fake_export):
    out = tmp_path / "hf"
    hf_export.export_hf("first", out)
    fake_export["now"] = True
    with pytest.raises(OSError, match="disk full"):
        hf_export.export_hf("second", out)
    assert (out / hf_export.SOURCE).read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
