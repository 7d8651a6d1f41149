"""Export a checkpoint as a Hugging Face Llama model: ``msplit export-hf CHECKPOINT OUT``.

The directory it writes (``model.safetensors``, ``config.json``, the tokenizer) loads with
transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer`` and gives the same logits as
the checkpoint (tested). Any saved TP/PP layout works: the weights are first gathered at a
single-device layout. Llama-style models only (RoPE, RMSNorm, SwiGLU, no biases, MHA or
GQA), which is what the configs build; anything else is refused with the field to change.

Megatron fuses what Llama keeps apart, so the mapping splits:
- ``linear_qkv`` rows are grouped per query group: [q heads of the group, k, v] x groups;
- ``linear_fc1`` rows are [gate; up] (SwiGLU multiplies silu(gate) by up).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig

# (field, value a Llama model needs)
LLAMA_REQUIREMENTS = (
    ("position_embedding", "rope"),
    ("normalization", "RMSNorm"),
    ("activation", "swiglu"),
    ("bias", False),
)


def llama_config(model: ModelConfig, eod_id: int, epsilon: float) -> dict[str, Any]:
    for name, needed in LLAMA_REQUIREMENTS:
        if getattr(model, name) != needed:
            raise ConfigError(
                f"model.{name}={getattr(model, name)!r}: only Llama-style models export to "
                f"Hugging Face ({name} must be {needed!r})"
            )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": model.padded_vocab_size(),
        "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.query_groups,
        "head_dim": model.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": model.seq_length,
        "rms_norm_eps": epsilon,
        "rope_theta": float(model.rotary_base),
        "tie_word_embeddings": model.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": eod_id,
        "eos_token_id": eod_id,
        "torch_dtype": "float32",
    }


def llama_state_dict(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    """Megatron GPTModel weights (local or Transformer Engine spec) under Llama's names."""
    heads, groups, head_dim = model.num_attention_heads, model.query_groups, model.head_dim
    per_group = heads // groups
    out = {"model.embed_tokens.weight": megatron["embedding.word_embeddings.weight"]}
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = megatron[src + "self_attention.linear_qkv.weight"]
        qkv = qkv.view(groups, (per_group + 2) * head_dim, model.hidden_size)
        q, k, v = qkv.split([per_group * head_dim, head_dim, head_dim], dim=1)
        fc1_gate, fc1_up = megatron[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
        out |= {
            dst + "input_layernorm.weight": _first(
                megatron, src + "input_layernorm.weight",
                src + "self_attention.linear_qkv.layer_norm_weight",
            ),
            dst + "self_attn.q_proj.weight": q.reshape(heads * head_dim, -1),
            dst + "self_attn.k_proj.weight": k.reshape(groups * head_dim, -1),
            dst + "self_attn.v_proj.weight": v.reshape(groups * head_dim, -1),
            dst + "self_attn.o_proj.weight": megatron[src + "self_attention.linear_proj.weight"],
            dst + "post_attention_layernorm.weight": _first(
                megatron, src + "pre_mlp_layernorm.weight",
                src + "mlp.linear_fc1.layer_norm_weight",
            ),
            dst + "mlp.gate_proj.weight": fc1_gate,
            dst + "mlp.up_proj.weight": fc1_up,
            dst + "mlp.down_proj.weight": megatron[src + "mlp.linear_fc2.weight"],
        }  # fmt: skip
    out["model.norm.weight"] = megatron["decoder.final_layernorm.weight"]
    if not model.tie_embeddings:
        out["lm_head.weight"] = megatron["output_layer.weight"]
    return {name: t.detach().float().cpu().contiguous() for name, t in out.items()}


def _first(weights: dict[str, torch.Tensor], *names: str) -> torch.Tensor:
    for name in names:
        if name in weights:
            return weights[name]
    raise KeyError(f"none of {names} in the checkpoint's weights")


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face model directory of ``checkpoint`` to ``out``; returns it."""
    from safetensors.torch import save_file

    from megatron_split.data.datasets import shards_tokenizer
    from megatron_split.inference import load_trained_model

    trained = load_trained_model(checkpoint)
    model = trained.config.model
    weights = {k: v for k, v in trained.gpt.state_dict().items() if isinstance(v, torch.Tensor)}
    tokenizer = shards_tokenizer(trained.config.data.paths)
    config = llama_config(model, tokenizer.eod_id, trained.gpt.config.layernorm_epsilon)

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(llama_state_dict(weights, model), tmp / "model.safetensors", {"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_tokenizer(tokenizer, tmp)
    lineage = {k: trained.meta[k] for k in ("step", "tokens", "lineage")}
    (tmp / "msplit_source.json").write_text(
        json.dumps({"checkpoint": str(trained.path), **lineage}, indent=2) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the directory appears complete or not at all
    return out


def _write_tokenizer(tokenizer: Any, directory: Path) -> None:
    eod = tokenizer.spec["eod"]
    if tokenizer.spec["kind"] == "sentencepiece":
        shutil.copy(tokenizer.spec["path"], directory / "tokenizer.model")
        config = {"tokenizer_class": "LlamaTokenizer", "eos_token": eod, "add_bos_token": False}
    else:
        tokenizer.save(directory / "tokenizer.json")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eod}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="msplit export-hf", description=__doc__.split("\n\n")[0].split(": ")[0]
    )
    parser.add_argument("checkpoint", help="a step, checkpoints/ or run directory")
    parser.add_argument("out", help="the Hugging Face model directory to write")
    args = parser.parse_args(argv)
    try:
        out = export_hf(args.checkpoint, args.out)
    except (ConfigError, FileNotFoundError) as error:
        print(f"msplit export-hf: {error}", file=sys.stderr)
        return 2
    print(f"written: {out} (AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
