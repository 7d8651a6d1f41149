"""Hugging Face models for tests: small random ones of each family we import, with a
tokenizer trained here, and the released SmolLM2 from the assets."""

import shutil
from pathlib import Path

import pytest
import torch

from data_prep.corpus import SMOLLM2_GGUF, default_assets_dir

SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128)  # fmt: skip
# Small random configs of each family we import (transformers' class, its config fields).
FAMILIES = {
    "llama-gqa-tied": ("LlamaConfig", "LlamaForCausalLM",
                       dict(SMALL, num_key_value_heads=2, rope_theta=50000.0)),
    "llama3-untied-biases": ("LlamaConfig", "LlamaForCausalLM", dict(
        SMALL, num_key_value_heads=1, tie_word_embeddings=False, attention_bias=True,
        mlp_bias=True, rms_norm_eps=1e-6, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(SMALL, num_key_value_heads=2, sliding_window=None)),
    "qwen2-qkv-bias": ("Qwen2Config", "Qwen2ForCausalLM",
                       dict(SMALL, num_key_value_heads=2, tie_word_embeddings=False)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, n_inner=96,
                  initializer_range=0.1)),
}  # fmt: skip


def write_tokenizer_dir(root: Path) -> Path:
    """A byte-level BPE trained here, saved as transformers saves a model's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    from data_prep.train_tokenizer import EOD_TOKEN, TrainTokenizerConfig
    from tests.data_prep.conftest import make_records, write_jsonl

    corpus = write_jsonl(root / "train.jsonl", make_records(300, seed=7))
    path = TrainTokenizerConfig([str(corpus)], str(root / "bpe"), vocab_size=400,
                                progress=False).build().train()  # fmt: skip
    PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOD_TOKEN).save_pretrained(
        root / "hf"
    )
    return root / "hf"


def random_model(family: str, tokenizer_dir: Path, out: Path):
    """A randomly initialised model of ``family`` saved as a Hugging Face directory."""
    import transformers
    from tokenizers import Tokenizer

    config_class, model_class, fields = FAMILIES[family]
    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    config = getattr(transformers, config_class)(vocab_size=vocab, **fields)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():  # biases and norms are zeros and ones at init: make them count
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(out)
    shutil.copytree(tokenizer_dir, out, dirs_exist_ok=True)
    return model


def smollm2() -> Path:
    """SmolLM2-135M-Instruct's released GGUF file, or skip saying how to install it."""
    gguf = default_assets_dir() / SMOLLM2_GGUF
    if not gguf.is_file():
        pytest.skip(f"{gguf} absent: run data_prep/install_assets.sh")
    return gguf
