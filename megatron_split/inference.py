"""A trained run's model on one device, from its native checkpoint: for scoring and export.

Rebuilds the GPT from the config saved in the checkpoint and loads its weights at a
single-device layout, whatever TP/PP layout saved them (dist_checkpointing reshards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_split.train.config import RunConfig


@dataclass
class TrainedModel:
    module: Any  # what to call (the GPTModel, wrapped for bf16 when it trained in bf16)
    gpt: Any  # the megatron.core GPTModel inside it
    config: RunConfig  # the run's config, as saved
    meta: dict[str, Any]  # the checkpoint's step, tokens, lineage
    path: Path  # the checkpoint directory


def load_trained_model(path: str | Path) -> TrainedModel:
    """The model of checkpoint ``path`` (a step, checkpoints/ or run directory), in eval mode."""
    from megatron_split.checkpoint import Checkpointer, read_meta, resolve_checkpoint
    from megatron_split.config import from_dict
    from megatron_split.runtime import init_distributed, seed_everything
    from megatron_split.train.loop import build_bare_model

    checkpoint = resolve_checkpoint(path)
    meta = read_meta(checkpoint)
    cfg = from_dict(RunConfig, meta["config"], where=f"{checkpoint}: config")
    runtime = init_distributed()
    seed_everything(cfg.seed)
    module, gpt = build_bare_model(cfg, runtime.device)
    Checkpointer(cfg.checkpoint, checkpoint.parent).load_weights(
        checkpoint, gpt, None, load_optimizer=False
    )
    module.eval()
    return TrainedModel(module, gpt, cfg, meta, checkpoint)
