"""`msplit demo`: split model training end to end on this machine, from registry packages.

Runs the experiment graph of configs/demo.yaml with the local executor: corpus ->
tokenizer -> shards -> embeddings -> clusters -> trunk -> the k branches and the standard
arm -> evaluation -> report. Every node is skipped when its output is complete, so a rerun
resumes where it stopped (and is a no-op once everything is done). It ends with the report:
each cluster's held-out loss under the trunk, the standard arm and its specialist, at equal
compute.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXPERIMENT = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    from slurm.cli import run_and_report

    example = "data.k=8 branches.tokens=163840 'overrides=[optim.lr=1e-3]' (every run)"
    return run_and_report(argv, "msplit demo", __doc__, EXPERIMENT, "runs/demo", example)


if __name__ == "__main__":
    sys.exit(main())
