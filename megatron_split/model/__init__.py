"""GPT models built on megatron.core from a dataclass config."""

from megatron_split.model.config import FP8Config, ModelConfig, transformer_engine_available

__all__ = ["FP8Config", "ModelConfig", "transformer_engine_available"]
