"""Checkpoints: atomic dist_checkpointing saves, exact resume, resharding loads."""

from megatron_split.checkpoint.checkpointer import (
    CheckpointConfig,
    Checkpointer,
    TrainState,
    complete_checkpoints,
    latest_checkpoint,
    read_meta,
    resolve_checkpoint,
    step_dir_name,
    write_atomic,
)

__all__ = [
    "CheckpointConfig",
    "Checkpointer",
    "TrainState",
    "complete_checkpoints",
    "latest_checkpoint",
    "read_meta",
    "resolve_checkpoint",
    "step_dir_name",
    "write_atomic",
]
