"""Greedy generation and shared-prefix scoring at a TP/PP layout, run under torchrun by the
tests:

torchrun --nproc-per-node 2 -m tests.eval.generate_at_layout CHECKPOINT OUT.json TP PP
"""

import json
import sys

import torch

from eval.lm import CheckpointLM

PROMPTS = ["The", "import os\nimport", "Section 1. Definitions", ""]


def shared_prefix_requests() -> list[tuple[list[int], list[int]]]:
    """(context, continuation) ids whose contexts share a 40-token prefix (a task's header),
    so that one batch reads it once; one or two continuation tokens each."""
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 400, (40,), generator=g).tolist()
    tails = [torch.randint(0, 400, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 12, 21)]
    return [(prefix + tail, [len(tail) % 7, 3][: len(tail) % 2 + 1]) for tail in tails]


def main(checkpoint: str, out: str, tensor: str, pipeline: str) -> None:
    import torch.distributed as dist

    lm = CheckpointLM.load(checkpoint, tensor=int(tensor), pipeline=int(pipeline))
    scores = [s.logprob for s in lm.loglikelihood_tokens(shared_prefix_requests(), 8)]
    texts = lm.generate_text(PROMPTS, max_new_tokens=12, batch_size=2)
    if dist.get_rank() == 0:
        with open(out, "w") as file:
            json.dump({"texts": texts, "scores": scores}, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
