"""Datasets and batches for training: megatron.core GPTDataset blends, resumable order."""

from megatron_split.data.batches import collate, step_microbatches
from megatron_split.data.datasets import DataConfig

__all__ = ["DataConfig", "collate", "step_microbatches"]
