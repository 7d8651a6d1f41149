"""Deterministic, resumable batches: sample i of the dataset is read at global position i.

A step consumes ``global_batch`` consecutive samples; data-parallel rank r reads its own
contiguous slice of them, cut into micro-batches. The position is one integer
(``consumed_samples``), saved in every checkpoint, so a resumed run reads exactly the samples
the uninterrupted run would have read: no replay, no skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = [key for key in samples[0] if key != "attention_mask"]
    return {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in keys}


def step_microbatches(
    dataset,
    consumed_samples: int,
    global_batch: int,
    micro_batch: int,
    dp_rank: int,
    dp_size: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """The micro-batches of this rank for the step that starts at ``consumed_samples``.

    Positions wrap around the dataset's end: training datasets are built with exactly the
    samples the run consumes, so only a small validation set is ever re-read.
    """
    per_rank = global_batch // dp_size
    start = consumed_samples + dp_rank * per_rank
    for offset in range(0, per_rank, micro_batch):
        first = start + offset
        yield collate([dataset[i % len(dataset)] for i in range(first, first + micro_batch)])
