import re

import pytest
import torch

from megatron_split.config import ConfigError
from megatron_split.model import ModelConfig, transformer_engine_available
from megatron_split.runtime import init_distributed, seed_everything

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CONFIGS = {
    "llama-like": ModelConfig(vocab_size=300, num_query_groups=2),
    "gpt2-like": ModelConfig(
        vocab_size=300,
        position_embedding="learned",
        normalization="LayerNorm",
        activation="gelu",
        tie_embeddings=False,
        bias=True,
    ),
}


@pytest.fixture(scope="module", autouse=True)
def runtime():
    return init_distributed()


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_counts_are_exact(name):
    cfg = CONFIGS[name]
    model = cfg.build()
    counts = cfg.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    embedding = sum(
        p.numel() for n, p in model.named_parameters() if "embedding" in n or "output_layer" in n
    )
    assert counts["embedding"] == embedding
    assert counts["non_embedding"] == counts["total"] - embedding


def test_flops_per_token_is_six_n_plus_attention():
    cfg = CONFIGS["llama-like"]
    counts = cfg.parameter_counts()
    logit = cfg.padded_vocab_size() * cfg.hidden_size
    attention = 12 * cfg.num_layers * cfg.hidden_size * cfg.seq_length
    assert cfg.flops_per_token() == 6 * (counts["non_embedding"] + logit) + attention


@pytest.mark.parametrize("groups", [None, 2])
def test_sdpa_attention_matches_local_spec(groups):
    outputs = {}
    state = None
    for attention in ("local", "sdpa"):
        cfg = ModelConfig(vocab_size=300, attention=attention, num_query_groups=groups)
        seed_everything(3)
        model = cfg.build().to(DEVICE)
        if state is None:
            state = model.state_dict()
        else:
            model.load_state_dict(state)
        tokens = torch.randint(
            0, 300, (2, cfg.seq_length), generator=torch.Generator().manual_seed(0)
        ).to(DEVICE)
        positions = torch.arange(cfg.seq_length, device=DEVICE).expand(2, -1)
        outputs[attention] = model(tokens, positions, None)
    torch.testing.assert_close(outputs["sdpa"], outputs["local"], rtol=1e-5, atol=1e-5)


def test_vocab_is_padded_for_tensor_parallel():
    cfg = ModelConfig(vocab_size=300)
    assert cfg.padded_vocab_size(1) == 384
    assert cfg.padded_vocab_size(2) == 512


@pytest.mark.skipif(transformer_engine_available(), reason="Transformer Engine is installed")
def test_te_or_fp8_without_te_is_an_error_not_a_fallback():
    with pytest.raises(ConfigError, match="needs Transformer Engine"):
        ModelConfig(vocab_size=300, attention="te").layer_spec()
    cfg = ModelConfig(vocab_size=300, attention="auto")
    assert cfg.resolved_attention() == "sdpa"
    cfg.fp8 = cfg.fp8 or __import__("megatron_split.model", fromlist=["FP8Config"]).FP8Config()
    with pytest.raises(ConfigError, match="needs Transformer Engine"):
        cfg.layer_spec()


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("seq_length", 0, ">= 1"),
        ("hidden_size", -64, ">= 1"),
        ("num_layers", 0, ">= 1"),
        ("num_attention_heads", 0, ">= 1"),
        ("num_query_groups", 0, ">= 1"),
        ("ffn_hidden_size", -1, ">= 1"),
        ("vocab_size", 0, ">= 1"),
        ("make_vocab_size_divisible_by", 0, ">= 1"),
        ("rotary_base", 0, ">= 1"),
        ("norm_epsilon", -1e-5, ">= 0"),
        ("init_std", -0.02, ">= 0"),
        ("hidden_dropout", 2.0, "in [0, 1]"),
        ("attention_dropout", -0.1, "in [0, 1]"),
        ("rope_scaling_factor", 0.0, "> 0"),
    ],
)
def test_numeric_fields_out_of_range_are_refused_by_name(field, value, allowed):
    message = f"model.{field}={value}: must be {allowed}"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ModelConfig(**{"vocab_size": 300, field: value}).validate()


@pytest.mark.parametrize(
    "override",
    ["model.seq_length=0", "model.hidden_size=-64", "model.num_layers=0", "model.hidden_dropout=2"],
)
def test_train_refuses_a_bad_model_field_before_it_starts(shards, capsys, override):
    from megatron_split.train_cli import main

    assert main([f"data.paths=[{shards[0]}]", override, "--print-config"]) == 2
    error = capsys.readouterr().err
    assert "config error" in error and f"{override.split('=')[0]}=" in error
