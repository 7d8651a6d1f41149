"""GPT model config: one dataclass that builds a megatron.core ``GPTModel``.

It also gives the exact parameter counts and FLOPs per token that MFU and the scaling laws
use, computed from the config alone so that a law can be planned before anything is built
(and tested against the built model).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from megatron_split.config import ConfigError

log = logging.getLogger(__name__)

Attention = Literal["auto", "te", "sdpa", "local"]
# How a run computes, not what the model is: free to differ from a parent's.
RUNTIME_FIELDS = ("seq_length", "attention", "params_dtype", "init_on_cpu", "recompute", "fp8",
                  "hidden_dropout", "attention_dropout", "init_std")  # fmt: skip
# Numeric fields and what they allow (a field that may be None may also be None).
AT_LEAST_ONE = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
                "ffn_hidden_size", "vocab_size", "make_vocab_size_divisible_by", "seq_length",
                "rotary_base")  # fmt: skip
NON_NEGATIVE = ("norm_epsilon", "init_std")
PROBABILITIES = ("hidden_dropout", "attention_dropout")
POSITIVE = ("rope_scaling_factor",)
ACTIVATIONS = {
    "swiglu": torch.nn.functional.silu,  # gated: silu(gate) * up
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": functools.partial(torch.nn.functional.gelu, approximate="tanh"),
}


@dataclass
class FP8Config:
    """FP8 through Transformer Engine (GPU only)."""

    format: Literal["e4m3", "hybrid"] = "hybrid"
    recipe: Literal["delayed", "tensorwise", "mxfp8", "blockwise"] = "delayed"
    amax_history_len: int = 1024
    amax_compute_algo: Literal["max", "most_recent"] = "max"
    margin: int = 0


@dataclass
class ModelConfig:
    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_query_groups: int | None = None  # GQA; None = one group per head (MHA)
    ffn_hidden_size: int | None = None  # None: 4h for GELU, 8h/3 rounded to 64 for SwiGLU
    vocab_size: int | None = None  # None: taken from the data's shard manifest
    make_vocab_size_divisible_by: int = 128
    seq_length: int = 128
    position_embedding: Literal["rope", "learned"] = "rope"
    rotary_base: int = 10000
    # Llama 3's RoPE scaling (long wavelengths divided by this factor; megatron fixes the
    # low/high frequency factors at 1 and 4 and the original context at 8192). None: off.
    rope_scaling_factor: float | None = None
    normalization: Literal["RMSNorm", "LayerNorm"] = "RMSNorm"
    norm_epsilon: float = 1e-5
    # gelu is the exact (erf) GELU; gelu_tanh its tanh approximation (GPT-2's "gelu_new")
    activation: Literal["swiglu", "gelu", "gelu_tanh"] = "swiglu"
    tie_embeddings: bool = True
    bias: bool = False  # on every linear layer
    qkv_bias: bool = False  # on the query, key and value projections only (Qwen2)
    init_std: float = 0.02
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    attention: Attention = "auto"  # auto: TE when importable, else SDPA
    params_dtype: Literal["fp32", "bf16"] = "fp32"
    # Initialise on the CPU: identical weights at every TP/PP layout. Off: faster init of
    # large models on GPU, with weights that depend on the layout.
    init_on_cpu: bool = True
    recompute: Literal["none", "selective", "full"] = "none"
    fp8: FP8Config | None = None

    def with_architecture(self, saved: dict[str, Any]) -> ModelConfig:
        """This config with the architecture of ``saved`` (another model's config, as a
        checkpoint records it): all but the fields of how a run computes."""
        kept = set(RUNTIME_FIELDS)
        if saved.get("position_embedding") == "learned":
            kept.discard("seq_length")  # the position table's size
        return dataclasses.replace(
            self,
            **{
                f.name: saved[f.name]
                for f in dataclasses.fields(self)
                if f.name in saved and f.name not in kept
            },  # fmt: skip
        )

    # ---- derived sizes ---------------------------------------------------------------
    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden_size:
            return self.ffn_hidden_size
        if self.activation == "swiglu":
            return 64 * math.ceil(8 * self.hidden_size / 3 / 64)
        return 4 * self.hidden_size

    def padded_vocab_size(self, tensor_parallel: int = 1) -> int:
        if self.vocab_size is None:
            raise ConfigError("model.vocab_size is unknown: set it or give data with a manifest")
        multiple = self.make_vocab_size_divisible_by * tensor_parallel
        return multiple * math.ceil(self.vocab_size / multiple)

    def validate(self, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> None:
        self._check_ranges()
        h, heads, groups = self.hidden_size, self.num_attention_heads, self.query_groups
        if h % heads:
            raise ConfigError(
                f"model.hidden_size={h} is not divisible by model.num_attention_heads={heads}"
            )
        if heads % groups:
            raise ConfigError(
                f"model.num_attention_heads={heads} is not divisible by "
                f"model.num_query_groups={groups}"
            )
        if heads % tensor_parallel or groups % tensor_parallel:
            raise ConfigError(
                f"model.num_attention_heads={heads} and query groups={groups} must be divisible "
                f"by parallel.tensor={tensor_parallel}"
            )
        if self.ffn_size % tensor_parallel:
            raise ConfigError(
                f"ffn size {self.ffn_size} is not divisible by parallel.tensor={tensor_parallel}"
            )
        if self.num_layers % pipeline_parallel:
            raise ConfigError(
                f"model.num_layers={self.num_layers} is not divisible by "
                f"parallel.pipeline={pipeline_parallel}"
            )
        if self.rope_scaling_factor is not None and self.position_embedding != "rope":
            raise ConfigError("model.rope_scaling_factor needs model.position_embedding=rope")
        if self.position_embedding == "rope" and self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head dim, got {self.head_dim}")
        if self.fp8 is not None and self.attention not in ("auto", "te"):
            raise ConfigError("model.fp8 needs model.attention=te (Transformer Engine)")

    def _check_ranges(self) -> None:
        """Each numeric field in its range, before any size is divided by another (a zero or
        negative size otherwise fails deep inside megatron, or crashes the process)."""
        for names, allowed, what in (
            (AT_LEAST_ONE, lambda v: v >= 1, ">= 1"),
            (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
            (PROBABILITIES, lambda v: 0 <= v <= 1, "in [0, 1]"),
            (POSITIVE, lambda v: v > 0, "> 0"),
        ):
            for name in names:
                value = getattr(self, name)
                if value is not None and not allowed(value):
                    raise ConfigError(f"model.{name}={value}: must be {what}")

    # ---- counts ----------------------------------------------------------------------
    def parameter_counts(self, tensor_parallel: int = 1) -> dict[str, int]:
        """Exact parameter counts of the built model (summed over all parallel ranks).

        ``non_embedding`` excludes the token and position embeddings and the output layer,
        as the scaling-law literature counts N.
        """
        h, L = self.hidden_size, self.num_layers
        v = self.padded_vocab_size(tensor_parallel)
        hd, heads, groups, ffn = (
            self.head_dim,
            self.num_attention_heads,
            self.query_groups,
            self.ffn_size,
        )
        norm = h * (2 if self.normalization == "LayerNorm" else 1)
        b = 1 if self.bias else 0
        qkv_out = (heads + 2 * groups) * hd
        qkv_b = 1 if self.bias or self.qkv_bias else 0
        attn = h * qkv_out + qkv_b * qkv_out + heads * hd * h + b * h
        fc1_out = ffn * (2 if self.activation == "swiglu" else 1)
        mlp = h * fc1_out + b * fc1_out + ffn * h + b * h
        per_layer = attn + mlp + 2 * norm
        non_embedding = L * per_layer + norm  # + final norm
        embedding = v * h + (self.seq_length * h if self.position_embedding == "learned" else 0)
        output = 0 if self.tie_embeddings else v * h
        return {
            "total": non_embedding + embedding + output,
            "non_embedding": non_embedding,
            "embedding": embedding + output,
        }

    def flops_per_token(self, tensor_parallel: int = 1) -> float:
        """Model FLOPs per trained token (forward + backward, no recompute), PaLM-style:
        6 x (matmul params incl. the logit layer) + 12 x layers x attention width x seq."""
        counts = self.parameter_counts(tensor_parallel)
        logit = self.padded_vocab_size(tensor_parallel) * self.hidden_size
        attention = (
            12 * self.num_layers * self.num_attention_heads * self.head_dim * self.seq_length
        )
        return 6.0 * (counts["non_embedding"] + logit) + attention

    # ---- build -----------------------------------------------------------------------
    def resolved_attention(self) -> str:
        if self.attention != "auto":
            return self.attention
        return "te" if transformer_engine_available() else "sdpa"

    def transformer_config(self, tensor_parallel: int, pipeline_parallel: int):
        from megatron.core.transformer.transformer_config import TransformerConfig

        bf16 = self.params_dtype == "bf16"
        fp8 = self.fp8
        kwargs = dict(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_query_groups=self.query_groups,
            ffn_hidden_size=self.ffn_size,
            kv_channels=self.head_dim,
            normalization=self.normalization,
            layernorm_epsilon=self.norm_epsilon,
            gated_linear_unit=self.activation == "swiglu",
            activation_func=ACTIVATIONS[self.activation],
            add_bias_linear=self.bias,
            add_qkv_bias=self.qkv_bias,
            init_method_std=self.init_std,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            tensor_model_parallel_size=tensor_parallel,
            pipeline_model_parallel_size=pipeline_parallel,
            pipeline_dtype=torch.bfloat16 if bf16 else torch.float32,
            params_dtype=torch.bfloat16 if bf16 else torch.float32,
            bf16=bf16,
            use_cpu_initialization=self.init_on_cpu,
            # CPU kernels for these fusions are torch code anyway; on GPU TE fuses instead.
            bias_activation_fusion=False,
            masked_softmax_fusion=False,
            persist_layer_norm=False,
            gradient_accumulation_fusion=False,
            apply_rope_fusion=False,
            cross_entropy_loss_fusion=False,
            bias_dropout_fusion=False,
            # megatron.core's own default ("full") warns that it is deprecated; no CUDA
            # graphs are captured either way (cuda_graph_impl stays "none")
            cuda_graph_scope=[],
        )
        if self.recompute != "none":
            kwargs["recompute_granularity"] = self.recompute
            if self.recompute == "full":
                kwargs.update(recompute_method="uniform", recompute_num_layers=1)
        if fp8 is not None:
            kwargs.update(
                fp8=fp8.format,
                fp8_recipe=fp8.recipe,
                fp8_amax_history_len=fp8.amax_history_len,
                fp8_amax_compute_algo=fp8.amax_compute_algo,
                fp8_margin=fp8.margin,
            )
        return TransformerConfig(**kwargs)

    def layer_spec(self, init_seed: int = 0):
        """The layer spec: TE, or megatron's local spec with the chosen core attention; its
        layers are seeded by global layer number (see seeded_layer.py), and their KV caches
        hold rotated keys (see cached_attention.py)."""
        from megatron_split.model.cached_attention import RotatedKeyCacheAttention
        from megatron_split.model.seeded_layer import SeededTransformerLayer

        spec = self._base_layer_spec()
        spec.module = SeededTransformerLayer
        spec.submodules.self_attention.module = RotatedKeyCacheAttention
        spec.params = {**spec.params, "init_seed": init_seed}
        return spec

    def _base_layer_spec(self):
        attention = self.resolved_attention()
        if attention == "te" or self.fp8 is not None:
            if not transformer_engine_available():
                raise ConfigError(
                    "model.attention=te / model.fp8 needs Transformer Engine, which is not "
                    "importable here; use model.attention=sdpa and drop model.fp8"
                )
            from megatron.core.models.gpt.gpt_layer_specs import (
                get_gpt_layer_with_transformer_engine_spec,
            )

            return get_gpt_layer_with_transformer_engine_spec()
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

        spec = get_gpt_layer_local_spec(normalization=self.normalization)
        if attention == "sdpa":
            from megatron_split.model.sdpa import SDPAttention

            spec.submodules.self_attention.submodules.core_attention = SDPAttention
        return spec

    def build(self, pre_process: bool = True, post_process: bool = True, init_seed: int = 0):
        """Build this rank's GPTModel chunk (call after the parallel groups exist). The weights
        depend on ``init_seed`` only, not on the parallel layout."""
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel

        tp = parallel_state.get_tensor_model_parallel_world_size()
        pp = parallel_state.get_pipeline_model_parallel_world_size()
        self.validate(tp, pp)
        model = GPTModel(
            config=self.transformer_config(tp, pp),
            transformer_layer_spec=self.layer_spec(init_seed),
            vocab_size=self.padded_vocab_size(tp),
            max_sequence_length=self.seq_length,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=self.tie_embeddings,
            position_embedding_type=(
                "rope" if self.position_embedding == "rope" else "learned_absolute"
            ),
            rotary_base=self.rotary_base,
            rope_scaling=self.rope_scaling_factor is not None,
            rope_scaling_factor=self.rope_scaling_factor or 8.0,
        )
        return model

    def describe(self) -> str:
        attention = self.resolved_attention()
        fp8 = f", FP8 {self.fp8.format}/{self.fp8.recipe}" if self.fp8 else ""
        spec = "Transformer Engine" if attention == "te" else f"local spec, {attention} attention"
        return f"layers: {spec}{fp8}, {self.params_dtype} params"


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # TE raises assorted errors when its CUDA libraries are absent
        return False
    return True
