"""A synchronous torch_dist save that writes from the training process itself.

megatron.core's torch_dist strategy writes every save, synchronous ones too, through its
async writer: the first save of a process spawns a multiprocessing manager (~2 s here) and
each save forks writer processes (~0.1 s). A synchronous save gains nothing from either.
This strategy hands the same PyTorch-distributed state dict and megatron's own save planner
to torch.distributed.checkpoint's in-process writer, so the files on disk are the same
format (``__<rank>_<i>.distcp`` + ``.metadata`` with megatron's shape metadata) and load with
megatron's default torch_dist strategy at any layout.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed.checkpoint as dcp
from megatron.core.dist_checkpointing.mapping import ShardedStateDict
from megatron.core.dist_checkpointing.strategies.torch import (
    MCoreSavePlanner,
    TorchDistSaveShardedStrategy,
    _replace_state_dict_keys_with_sharded_keys,
    mcore_to_pyt_state_dict,
)


class InProcessTorchDistSave(TorchDistSaveShardedStrategy):
    """torch_dist, version 1, written by the calling process (one file per rank)."""

    def __init__(self) -> None:
        super().__init__("torch_dist", 1, thread_count=1)

    def save(self, sharded_state_dict: ShardedStateDict, checkpoint_dir: Path) -> None:
        sharded_state_dict, _, _ = _replace_state_dict_keys_with_sharded_keys(
            sharded_state_dict, self.keep_only_main_replica
        )
        dcp.save(
            mcore_to_pyt_state_dict(sharded_state_dict, False),
            storage_writer=dcp.FileSystemWriter(checkpoint_dir, thread_count=1),
            planner=MCoreSavePlanner(
                dedup_replicated_tensors=not self.keep_only_main_replica,
                flatten_state_dict=False,
            ),
        )
