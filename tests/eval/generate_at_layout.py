"""Greedy generation at a TP/PP layout, run under torchrun by the tests:

torchrun --nproc-per-node 2 -m tests.eval.generate_at_layout CHECKPOINT OUT.json TP PP
"""

import json
import sys

from eval.lm import CheckpointLM

PROMPTS = ["The", "import os\nimport", "Section 1. Definitions", ""]


def main(checkpoint: str, out: str, tensor: str, pipeline: str) -> None:
    import torch.distributed as dist

    lm = CheckpointLM.load(checkpoint, tensor=int(tensor), pipeline=int(pipeline))
    texts = lm.generate_text(PROMPTS, max_new_tokens=12, batch_size=2)
    if dist.get_rank() == 0:
        with open(out, "w") as file:
            json.dump(texts, file)


if __name__ == "__main__":
    main(*sys.argv[1:])
