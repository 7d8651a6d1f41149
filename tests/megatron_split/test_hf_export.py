"""Export to Hugging Face: transformers loads the directory and gives the checkpoint's logits."""

import json
import subprocess
import sys

import pytest
import torch

from megatron_split.checkpoint.hf_export import llama_config
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


@pytest.mark.slow
def test_a_tensor_parallel_checkpoint_exports(demo_family, tmp_path):
    shard = sorted((demo_family / "clusters").glob("*.idx"))[0].with_suffix("")
    run = tmp_path / "tp2"
    train(["configs/tiny.yaml", f"run_dir={run}", f"data.paths=[{shard}]", "parallel.tensor=2",
           "train.steps=4", "train.eval_every=0", "optim.schedule.warmup_steps=1",
           "train.progress=false", "train.tensorboard=false"], nproc=2)  # fmt: skip
    hf_logits_match(run, tmp_path / "hf")


@pytest.mark.parametrize(
    "field, value", [("normalization", "LayerNorm"), ("activation", "gelu"), ("bias", True)]
)
def test_models_hugging_face_llama_cannot_hold_are_refused(field, value):
    with pytest.raises(ConfigError, match=f"model.{field}=.*only Llama-style"):
        llama_config(ModelConfig(vocab_size=256, **{field: value}), eod_id=0, epsilon=1e-5)
