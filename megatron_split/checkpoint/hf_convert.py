"""The correspondence between this project's GPT models and Hugging Face's, both ways.

Three Hugging Face architectures hold a model of ours exactly, and each reads back as one:

- Llama (RoPE with its theta and Llama 3 scaling, RMSNorm, SwiGLU, MHA or GQA, biases on
  every linear layer or none); Mistral reads in as Llama (the same layers, when its
  sliding window spans the whole context);
- Qwen2: Llama with biases on the query, key and value projections only;
- GPT-2 (learned positions, LayerNorm, GELU exact or tanh; MHA; biases, written as zeros
  when the model has none).

Anything else is refused by name, never approximated. Megatron fuses what Hugging Face
keeps apart: ``linear_qkv`` rows are grouped per query group, [q heads of the group, k, v]
x groups, and ``linear_fc1`` rows are [gate; up] (SwiGLU multiplies silu(gate) by up).
GPT-2's ``Conv1D`` stores each weight transposed, and its ``c_attn`` columns are [q; k; v]
over all heads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from megatron_split.config import ConfigError
from megatron_split.model.config import ModelConfig

# A tensor read and converted when called.
Loader = Callable[[], torch.Tensor]

# The model fields that decide which Hugging Face architecture holds the model exactly.
SHAPES = {
    "llama": {"position_embedding": "rope", "normalization": "RMSNorm", "activation": "swiglu"},
    "gpt2": {"position_embedding": "learned", "normalization": "LayerNorm"},
}
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new"}  # ours -> GPT-2's name
# GPT-2's names of the tanh GELU, and the exact one, as config.json spells them
GPT2_ACTIVATIONS_IN = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                       "gelu_fast": "gelu_tanh", "gelu": "gelu"}  # fmt: skip
# Megatron fixes the other Llama 3 RoPE scaling parameters at these values.
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}  # fmt: skip
# Buffers some Hugging Face checkpoints carry that are not weights (causal masks, RoPE
# frequencies), by the end of their names.
BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


def hf_architecture(model: ModelConfig) -> str:
    """``llama``, ``qwen2`` or ``gpt2``: the Hugging Face model that holds this shape exactly."""
    shape = {name: getattr(model, name) for name in SHAPES["llama"]}
    if all(shape[k] == v for k, v in SHAPES["gpt2"].items()):
        if model.activation not in GPT2_ACTIVATIONS:
            raise ConfigError(f"model.activation={model.activation!r}: GPT-2 needs a GELU")
        if model.query_groups != model.num_attention_heads:
            raise ConfigError(
                f"model.num_query_groups={model.query_groups}: GPT-2 has no grouped-query "
                f"attention (set it to num_attention_heads={model.num_attention_heads})"
            )
        if model.qkv_bias and not model.bias:
            raise ConfigError("model.qkv_bias=true: GPT-2 has biases everywhere or nowhere")
        return "gpt2"
    if shape == SHAPES["llama"]:
        return "qwen2" if model.qkv_bias and not model.bias else "llama"
    fields = ", ".join(f"model.{k}={v!r}" for k, v in shape.items())
    raise ConfigError(
        f"{fields}: only Llama-style ({SHAPES['llama']}) or GPT-2-style ({SHAPES['gpt2']}, "
        "a GELU) models have a Hugging Face counterpart"
    )


# ---- config.json ---------------------------------------------------------------------
def hf_config(model: ModelConfig, eod_id: int) -> dict[str, Any]:
    """The ``config.json`` of the model's Hugging Face counterpart."""
    common = {
        "vocab_size": model.padded_vocab_size(),
        "tie_word_embeddings": model.tie_embeddings,
        "bos_token_id": eod_id,
        "eos_token_id": eod_id,
        "torch_dtype": "float32",
    }
    architecture = hf_architecture(model)
    if architecture == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": model.hidden_size,
            "n_inner": model.ffn_size,
            "n_layer": model.num_layers,
            "n_head": model.num_attention_heads,
            "n_positions": model.seq_length,
            "activation_function": GPT2_ACTIVATIONS[model.activation],
            "layer_norm_epsilon": model.norm_epsilon,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            **common,
        }
    config = {
        "architectures": ["Qwen2ForCausalLM" if architecture == "qwen2" else "LlamaForCausalLM"],
        "model_type": architecture,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.ffn_size,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.query_groups,
        "head_dim": model.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": model.seq_length,
        "rms_norm_eps": model.norm_epsilon,
        "rope_theta": float(model.rotary_base),
        **common,
    }
    if architecture == "qwen2":
        config["use_sliding_window"] = False
    else:
        config |= {"attention_bias": model.bias, "mlp_bias": model.bias}
    if model.rope_scaling_factor is not None:
        config["rope_scaling"] = {"rope_type": "llama3", "factor": model.rope_scaling_factor,
                                  **LLAMA3_ROPE}  # fmt: skip
    return config


def model_config(hf: Any, where: str) -> ModelConfig:
    """Our model config of a Hugging Face config (a ``transformers`` ``PretrainedConfig``);
    a field we cannot express is refused by name (``where`` names the file)."""
    kind = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
            "Qwen2ForCausalLM": "qwen2", "GPT2LMHeadModel": "gpt2"}  # fmt: skip
    # a GGUF file's config names no architecture, only its model type
    by_type = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
               "qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}  # fmt: skip
    model_type = getattr(hf, "model_type", None)
    architectures = getattr(hf, "architectures", None) or [
        by_type.get(model_type, f"model_type={model_type}")
    ]
    known = [kind[a] for a in architectures if a in kind]
    if not known:
        raise ConfigError(
            f"{where}: architectures={architectures}: importable ones are {', '.join(kind)}"
        )

    def refuse(field: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{where}: {field}={value!r}: {why}")

    common = dict(
        vocab_size=hf.vocab_size,
        make_vocab_size_divisible_by=1,  # the model's own vocabulary, no padding rows
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)),
    )
    if known[0] == "gpt2":
        activation = GPT2_ACTIVATIONS_IN.get(hf.activation_function)
        if activation is None:
            raise refuse("activation_function", hf.activation_function, "not a GELU we have")
        if not getattr(hf, "scale_attn_weights", True):
            raise refuse("scale_attn_weights", False, "attention is always scaled here")
        if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
            raise refuse("scale_attn_by_inverse_layer_idx", True, "not implemented here")
        return ModelConfig(
            num_layers=hf.n_layer,
            hidden_size=hf.n_embd,
            num_attention_heads=hf.n_head,
            ffn_hidden_size=getattr(hf, "n_inner", None) or 4 * hf.n_embd,
            seq_length=hf.n_positions,
            position_embedding="learned",
            normalization="LayerNorm",
            norm_epsilon=hf.layer_norm_epsilon,
            activation=activation,
            bias=True,
            **common,
        )

    if hf.hidden_act != "silu":
        raise refuse("hidden_act", hf.hidden_act, "the Llama family here has SwiGLU (silu)")
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    if head_dim * hf.num_attention_heads != hf.hidden_size:
        raise refuse("head_dim", head_dim, "must be hidden_size / num_attention_heads here")
    window = getattr(hf, "sliding_window", None)
    sliding = getattr(hf, "use_sliding_window", window is not None)
    if sliding and window is not None and window < hf.max_position_embeddings:
        raise refuse("sliding_window", window, "sliding-window attention is not implemented")
    layer_types = set(getattr(hf, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"}:
        raise refuse("layer_types", sorted(layer_types), "only full attention is implemented")
    if known[0] == "qwen2":
        bias, qkv_bias = False, True
    else:
        bias = bool(getattr(hf, "attention_bias", False))
        if bool(getattr(hf, "mlp_bias", False)) != bias:
            raise refuse("mlp_bias", hf.mlp_bias, f"biases are on every layer or none here "
                                                  f"(attention_bias={bias})")  # fmt: skip
        qkv_bias = False
    # transformers 5 gathers theta and scaling in rope_parameters; older configs keep both
    legacy = {"rope_theta": getattr(hf, "rope_theta", 10000.0)}
    legacy |= getattr(hf, "rope_scaling", None) or {}
    rope = getattr(hf, "rope_parameters", None) or legacy
    theta = float(rope.get("rope_theta", 10000.0))
    if theta != int(theta):
        raise refuse("rope_theta", theta, "must be a whole number here")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        fixed = {k: rope.get(k) for k in LLAMA3_ROPE}
        if any(float(fixed[k] or 0) != v for k, v in LLAMA3_ROPE.items()):
            raise refuse("rope_scaling", fixed, f"megatron's Llama 3 scaling fixes {LLAMA3_ROPE}")
        scaling = float(rope["factor"])
    elif rope_type != "default":
        raise refuse("rope_scaling.rope_type", rope_type, "only default and llama3 are implemented")
    return ModelConfig(
        num_layers=hf.num_hidden_layers,
        hidden_size=hf.hidden_size,
        num_attention_heads=hf.num_attention_heads,
        num_query_groups=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        ffn_hidden_size=hf.intermediate_size,
        seq_length=hf.max_position_embeddings,
        position_embedding="rope",
        rotary_base=int(theta),
        rope_scaling_factor=scaling,
        normalization="RMSNorm",
        norm_epsilon=hf.rms_norm_eps,
        activation="swiglu",
        bias=bias,
        qkv_bias=qkv_bias,
        **common,
    )


# ---- weights -------------------------------------------------------------------------
def hf_state_dict(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    """Megatron GPTModel weights (local or Transformer Engine spec) under the names of the
    model's Hugging Face counterpart."""
    if hf_architecture(model) == "gpt2":
        out = _gpt2_to_hf(megatron, model)
    else:
        out = _llama_to_hf(megatron, model)
    return {name: t.detach().float().cpu().contiguous() for name, t in out.items()}


def megatron_loaders(
    shapes: dict[str, tuple[int, ...]],
    read: Callable[[str], torch.Tensor],
    model: ModelConfig,
    where: str,
) -> dict[str, Loader]:
    """Hugging Face weights under the names of megatron's local-spec GPTModel, each a loader
    that reads (``read(hf_name)``) and converts its tensor only when called, so that a rank
    reads only what it holds. ``shapes`` (Hugging Face name -> shape) is checked at once: a
    missing, misshapen or left-over tensor is refused by name (``where`` names the files)."""
    names = {k: s for k, s in shapes.items() if not k.endswith(BUFFERS)}
    if model.tie_embeddings:  # transformers' state dicts repeat a tied output layer
        names.pop("lm_head.weight", None)
    taken: set[str] = set()

    def take(name: str, *shape: int) -> Loader:
        if name not in names:
            raise ConfigError(f"{where}: tensor {name} is missing")
        if tuple(names[name]) != shape:
            raise ConfigError(
                f"{where}: tensor {name} has shape {tuple(names[name])}, the config says {shape}"
            )
        taken.add(name)
        return lambda: read(name)

    if hf_architecture(model) == "gpt2":
        out = _gpt2_from_hf(take, model)
    else:
        out = _llama_from_hf(take, model)
    extra = sorted(set(names) - taken)
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        raise ConfigError(f"{where}: tensors the config has no place for: "
                          f"{', '.join(extra[:5])}{more}")  # fmt: skip
    return out


def _llama_to_hf(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    heads, groups, head_dim = model.num_attention_heads, model.query_groups, model.head_dim
    per_group = heads // groups
    out = {"model.embed_tokens.weight": megatron["embedding.word_embeddings.weight"]}
    qkv_kinds = ("weight", "bias") if model.bias or model.qkv_bias else ("weight",)
    kinds = ("weight", "bias") if model.bias else ("weight",)
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        for kind in qkv_kinds:
            qkv = megatron[f"{src}self_attention.linear_qkv.{kind}"]
            qkv = qkv.view(groups, (per_group + 2) * head_dim, -1)  # a bias: one column
            q, k, v = qkv.split([per_group * head_dim, head_dim, head_dim], dim=1)
            out |= {
                f"{dst}self_attn.q_proj.{kind}": q.reshape(heads * head_dim, -1).squeeze(-1),
                f"{dst}self_attn.k_proj.{kind}": k.reshape(groups * head_dim, -1).squeeze(-1),
                f"{dst}self_attn.v_proj.{kind}": v.reshape(groups * head_dim, -1).squeeze(-1),
            }
        for kind in kinds:
            gate, up = megatron[f"{src}mlp.linear_fc1.{kind}"].chunk(2, dim=0)
            out |= {
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


def _shape(kind: str, rows: int, inputs: int) -> tuple[int, ...]:
    """A linear layer's weight (rows, inputs) or bias (rows,) shape."""
    return (rows, inputs) if kind == "weight" else (rows,)


def _llama_from_hf(take: Callable[..., Loader], model: ModelConfig) -> dict[str, Loader]:
    h, vocab, ffn = model.hidden_size, model.vocab_size, model.ffn_size
    heads, groups, head_dim = model.num_attention_heads, model.query_groups, model.head_dim
    out = {"embedding.word_embeddings.weight": take("model.embed_tokens.weight", vocab, h)}
    qkv_kinds = ("weight", "bias") if model.bias or model.qkv_bias else ("weight",)
    kinds = ("weight", "bias") if model.bias else ("weight",)
    for i in range(model.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        for kind in qkv_kinds:
            qkv = (
                take(f"{src}self_attn.q_proj.{kind}", *_shape(kind, heads * head_dim, h)),
                take(f"{src}self_attn.k_proj.{kind}", *_shape(kind, groups * head_dim, h)),
                take(f"{src}self_attn.v_proj.{kind}", *_shape(kind, groups * head_dim, h)),
            )
            out[f"{dst}self_attention.linear_qkv.{kind}"] = partial(_group_qkv, qkv, groups)
        for kind in kinds:
            gate_up = (
                take(f"{src}mlp.gate_proj.{kind}", *_shape(kind, ffn, h)),
                take(f"{src}mlp.up_proj.{kind}", *_shape(kind, ffn, h)),
            )
            out |= {
                f"{dst}self_attention.linear_proj.{kind}":
                    take(f"{src}self_attn.o_proj.{kind}", *_shape(kind, h, heads * head_dim)),
                f"{dst}mlp.linear_fc1.{kind}": partial(_concatenate, gate_up),
                f"{dst}mlp.linear_fc2.{kind}":
                    take(f"{src}mlp.down_proj.{kind}", *_shape(kind, h, ffn)),
            }  # fmt: skip
        out[dst + "input_layernorm.weight"] = take(src + "input_layernorm.weight", h)
        out[dst + "pre_mlp_layernorm.weight"] = take(src + "post_attention_layernorm.weight", h)
    out["decoder.final_layernorm.weight"] = take("model.norm.weight", h)
    if not model.tie_embeddings:
        out["output_layer.weight"] = take("lm_head.weight", vocab, h)
    return out


def _group_qkv(qkv: tuple[Loader, Loader, Loader], groups: int) -> torch.Tensor:
    """Separate q, k, v rows -> megatron's [q heads of the group, k, v] x groups."""
    q, k, v = (load() for load in qkv)
    grouped = [t.reshape(groups, -1, *t.shape[1:]) for t in (q, k, v)]
    return torch.cat(grouped, dim=1).reshape(-1, *q.shape[1:])


def _concatenate(parts: tuple[Loader, ...]) -> torch.Tensor:
    return torch.cat([load() for load in parts])


# GPT-2 name -> megatron's, within a layer
GPT2_NORMS = {"ln_1": "input", "ln_2": "pre_mlp"}
GPT2_LINEARS = {"attn.c_attn": "self_attention.linear_qkv", "attn.c_proj":
                "self_attention.linear_proj", "mlp.c_fc": "mlp.linear_fc1",
                "mlp.c_proj": "mlp.linear_fc2"}  # fmt: skip


def _gpt2_linear_shapes(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of each GPT-2 linear layer."""
    h, ffn = model.hidden_size, model.ffn_size
    return {"attn.c_attn": (3 * h, h), "attn.c_proj": (h, h), "mlp.c_fc": (ffn, h),
            "mlp.c_proj": (h, ffn)}  # fmt: skip


def _gpt2_to_hf(megatron: dict[str, torch.Tensor], model: ModelConfig) -> dict:
    heads, head_dim, hidden = model.num_attention_heads, model.head_dim, model.hidden_size
    out = {
        "transformer.wte.weight": megatron["embedding.word_embeddings.weight"],
        "transformer.wpe.weight": megatron["embedding.position_embeddings.weight"],
        "transformer.ln_f.weight": megatron["decoder.final_layernorm.weight"],
        "transformer.ln_f.bias": megatron["decoder.final_layernorm.bias"],
    }
    for i in range(model.num_layers):
        src, dst = f"decoder.layers.{i}.", f"transformer.h.{i}."
        for name, norm in GPT2_NORMS.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{name}.{kind}"] = _norm(megatron, src, norm, kind)
        for name, (rows, _) in _gpt2_linear_shapes(model).items():
            layer = GPT2_LINEARS[name]
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


def _gpt2_from_hf(take: Callable[..., Loader], model: ModelConfig) -> dict[str, Loader]:
    h, vocab, heads, head_dim = (model.hidden_size, model.vocab_size, model.num_attention_heads,
                                 model.head_dim)  # fmt: skip
    out = {
        "embedding.word_embeddings.weight": take("transformer.wte.weight", vocab, h),
        "embedding.position_embeddings.weight": take("transformer.wpe.weight", model.seq_length, h),
        "decoder.final_layernorm.weight": take("transformer.ln_f.weight", h),
        "decoder.final_layernorm.bias": take("transformer.ln_f.bias", h),
    }
    for i in range(model.num_layers):
        src, dst = f"transformer.h.{i}.", f"decoder.layers.{i}."
        for name, norm in GPT2_NORMS.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{norm}_layernorm.{kind}"] = take(f"{src}{name}.{kind}", h)
        for name, (rows, cols) in _gpt2_linear_shapes(model).items():
            weight = take(f"{src}{name}.weight", cols, rows)
            bias = take(f"{src}{name}.bias", rows)
            per_head = (heads, head_dim) if name == "attn.c_attn" else None
            out[f"{dst}{GPT2_LINEARS[name]}.weight"] = partial(_gpt2_weight, weight, per_head)
            out[f"{dst}{GPT2_LINEARS[name]}.bias"] = partial(_gpt2_bias, bias, per_head)
    if not model.tie_embeddings:
        out["output_layer.weight"] = take("lm_head.weight", vocab, h)
    return out


def _gpt2_weight(load: Loader, per_head: tuple[int, int] | None) -> torch.Tensor:
    """A Conv1D weight, stored (in, out), as megatron's (out, in); c_attn's [q of every head;
    k; v] rows regrouped per head [q, k, v] (``per_head``: heads, head_dim)."""
    weight = load().t()
    if per_head is None:
        return weight
    rows, h = weight.shape
    return weight.reshape(3, *per_head, h).transpose(0, 1).reshape(rows, h)


def _gpt2_bias(load: Loader, per_head: tuple[int, int] | None) -> torch.Tensor:
    bias = load()
    if per_head is None:
        return bias
    return bias.reshape(3, *per_head).transpose(0, 1).reshape(-1)


def _norm(megatron: dict[str, torch.Tensor], layer: str, which: str, kind: str) -> torch.Tensor:
    """A layer's input or pre-MLP norm: its own module (local spec) or fused into the next
    linear layer (Transformer Engine spec)."""
    fused = "self_attention.linear_qkv" if which == "input" else "mlp.linear_fc1"
    for name in (f"{layer}{which}_layernorm.{kind}", f"{layer}{fused}.layer_norm_{kind}"):
        if name in megatron:
            return megatron[name]
    raise KeyError(f"no {which} norm {kind} of {layer} in the checkpoint's weights")
