"""Export a checkpoint as a Hugging Face model: ``msplit export-hf CHECKPOINT OUT``.

The directory it writes (``model.safetensors``, ``config.json``, the tokenizer) loads with
transformers' ``AutoModelForCausalLM`` and ``AutoTokenizer`` and gives the same logits as
the checkpoint (tested). Any saved TP/PP layout works: the weights are first gathered at a
single-device layout. Two shapes have an exact Hugging Face counterpart:

- Llama (RoPE, RMSNorm, SwiGLU; MHA or GQA; biases or none), what the configs build;
- GPT-2 (learned positions, LayerNorm, GELU; MHA; biases written as zeros when the model
  has none).

Anything else is refused with the fields to change. Megatron fuses what both keep apart:
``linear_qkv`` rows are grouped per query group, [q heads of the group, k, v] x groups, and
``linear_fc1`` rows are [gate; up] (SwiGLU multiplies silu(gate) by up). GPT-2's ``Conv1D``
stores each weight transposed, and its ``c_attn`` columns are [q; k; v] over all heads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig

# The model fields that decide which Hugging Face architecture holds the model exactly.
SHAPES = {
    "llama": {"position_embedding": "rope", "normalization": "RMSNorm", "activation": "swiglu"},
    "gpt2": {"position_embedding": "learned", "normalization": "LayerNorm", "activation": "gelu"},
}


def hf_architecture(model: ModelConfig) -> str:
    """``llama`` or ``gpt2``: the Hugging Face model that holds this shape exactly."""
    shape = {name: getattr(model, name) for name in SHAPES["llama"]}
    for name, needed in SHAPES.items():
        if shape == needed:
            if name == "gpt2" and model.query_groups != model.num_attention_heads:
                raise ConfigError(
                    f"model.num_query_groups={model.query_groups}: GPT-2 has no grouped-query "
                    f"attention (set it to num_attention_heads={model.num_attention_heads})"
                )
            if name == "gpt2" and model.head_dim * model.num_attention_heads != model.hidden_size:
                raise ConfigError(f"model.head_dim={model.head_dim}: GPT-2 needs hidden/heads")
            return name
    fields = ", ".join(f"model.{k}={v!r}" for k, v in shape.items())
    raise ConfigError(
        f"{fields}: only Llama-style ({SHAPES['llama']}) or GPT-2-style ({SHAPES['gpt2']}) "
        "models export to Hugging Face"
    )


def hf_config(model: ModelConfig, eod_id: int, epsilon: float) -> dict[str, Any]:
    """The ``config.json`` of the model's Hugging Face counterpart."""
    common = {
        "vocab_size": model.padded_vocab_size(),
        "tie_word_embeddings": model.tie_embeddings,
        "bos_token_id": eod_id,
        "eos_token_id": eod_id,
        "torch_dtype": "float32",
    }
    if hf_architecture(model) == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": model.hidden_size,
            "n_inner": model.ffn_size,
            "n_layer": model.num_layers,
            "n_head": model.num_attention_heads,
            "n_positions": model.seq_length,
            "activation_function": "gelu",  # megatron's GELU is the exact (erf) one
            "layer_norm_epsilon": epsilon,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            **common,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
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
        "attention_bias": model.bias,
        "mlp_bias": model.bias,
        **common,
    }


def hf_state_dict(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    """Megatron GPTModel weights (local or Transformer Engine spec) under the names of the
    model's Hugging Face counterpart."""
    if hf_architecture(model) == "gpt2":
        out = _gpt2_weights(megatron, model)
    else:
        out = _llama_weights(megatron, model)
    return {name: t.detach().float().cpu().contiguous() for name, t in out.items()}


def _llama_weights(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    heads, groups, head_dim = model.num_attention_heads, model.query_groups, model.head_dim
    per_group = heads // groups
    out = {"model.embed_tokens.weight": megatron["embedding.word_embeddings.weight"]}
    kinds = ("weight", "bias") if model.bias else ("weight",)
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        for kind in kinds:
            qkv = megatron[f"{src}self_attention.linear_qkv.{kind}"]
            qkv = qkv.view(groups, (per_group + 2) * head_dim, -1)  # a bias: one column
            q, k, v = qkv.split([per_group * head_dim, head_dim, head_dim], dim=1)
            gate, up = megatron[f"{src}mlp.linear_fc1.{kind}"].chunk(2, dim=0)
            out |= {
                f"{dst}self_attn.q_proj.{kind}": q.reshape(heads * head_dim, -1).squeeze(-1),
                f"{dst}self_attn.k_proj.{kind}": k.reshape(groups * head_dim, -1).squeeze(-1),
                f"{dst}self_attn.v_proj.{kind}": v.reshape(groups * head_dim, -1).squeeze(-1),
                f"{dst}self_attn.o_proj.{kind}":
                    megatron[f"{src}self_attention.linear_proj.{kind}"],
                f"{dst}mlp.gate_proj.{kind}": gate,
                f"{dst}mlp.up_proj.{kind}": up,
                f"{dst}mlp.down_proj.{kind}": megatron[f"{src}mlp.linear_fc2.{kind}"],
            }  # fmt: skip
        out[dst + "input_layernorm.weight"] = _norm(megatron, src, "input", "weight")
        out[dst + "post_attention_layernorm.weight"] = _norm(megatron, src, "pre_mlp", "weight")
    out["model.norm.weight"] = megatron["decoder.final_layernorm.weight"]
    if not model.tie_embeddings:
        out["lm_head.weight"] = megatron["output_layer.weight"]
    return out


def _gpt2_weights(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    heads, head_dim, hidden = model.num_attention_heads, model.head_dim, model.hidden_size
    out = {
        "transformer.wte.weight": megatron["embedding.word_embeddings.weight"],
        "transformer.wpe.weight": megatron["embedding.position_embeddings.weight"],
        "transformer.ln_f.weight": megatron["decoder.final_layernorm.weight"],
        "transformer.ln_f.bias": megatron["decoder.final_layernorm.bias"],
    }
    norms = {"ln_1": "input", "ln_2": "pre_mlp"}  # GPT-2 name -> megatron's norm
    linears = {  # GPT-2 name -> (megatron layer, output rows)
        "attn.c_attn": ("self_attention.linear_qkv", 3 * hidden),
        "attn.c_proj": ("self_attention.linear_proj", hidden),
        "mlp.c_fc": ("mlp.linear_fc1", model.ffn_size),
        "mlp.c_proj": ("mlp.linear_fc2", hidden),
    }
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"transformer.h.{i}."
        for name, which in norms.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{name}.{kind}"] = _norm(megatron, src, which, kind)
        for name, (layer, rows) in linears.items():
            weight = megatron[f"{src}{layer}.weight"]
            # a zero bias where the model has none: GPT-2's layers always add one
            bias = megatron.get(f"{src}{layer}.bias", torch.zeros(rows, dtype=weight.dtype))
            if name == "attn.c_attn":  # per head [q, k, v] rows -> [q of every head; k; v]
                weight = weight.view(heads, 3, head_dim, hidden).transpose(0, 1)
                weight, bias = weight.reshape(rows, hidden), bias.view(heads, 3, head_dim)
                bias = bias.transpose(0, 1).reshape(rows)
            out[f"{dst}{name}.weight"] = weight.t()  # Conv1D stores (in, out)
            out[f"{dst}{name}.bias"] = bias
    if not model.tie_embeddings:
        out["lm_head.weight"] = megatron["output_layer.weight"]
    return out


def _norm(megatron: dict[str, torch.Tensor], layer: str, which: str, kind: str) -> torch.Tensor:
    """A layer's input or pre-MLP norm: its own module (local spec) or fused into the next
    linear layer (Transformer Engine spec)."""
    fused = "self_attention.linear_qkv" if which == "input" else "mlp.linear_fc1"
    return _first(megatron, f"{layer}{which}_layernorm.{kind}", f"{layer}{fused}.layer_norm_{kind}")


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
    config = hf_config(model, tokenizer.eod_id, trained.gpt.config.layernorm_epsilon)

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(hf_state_dict(weights, model), tmp / "model.safetensors", {"format": "pt"})
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
