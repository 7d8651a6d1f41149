"""The runs of a split family, as config overrides: a trunk on the cluster mixture, and one
branch per cluster continued from a trunk checkpoint.

Both are ordinary training runs of the same base config: what makes a run the trunk is its
data (every cluster at its natural token share), and what makes it a branch is
``init.checkpoint`` (weights from the trunk, a fresh optimizer and LR schedule, lineage
recorded) plus one cluster's data. The demo and the Slurm experiment build their runs here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from megatron_split.data.clusters import ClusterData


def data_overrides(data: Any) -> list[str]:
    """A DataConfig as dotted overrides (JSON values are YAML)."""
    return [f"data.{k}={json.dumps(v)}" for k, v in asdict(data).items() if v is not None]


def trunk_overrides(clusters: ClusterData, run_dir: str | Path) -> list[str]:
    """The trunk: all clusters at their natural token shares."""
    return [f"run_dir={run_dir}", *data_overrides(clusters.trunk())]


def branch_overrides(
    clusters: ClusterData,
    cluster: int,
    parent: str | Path | None,
    run_dir: str | Path,
    steps: int,
) -> list[str]:
    """Cluster ``cluster``'s continued pretraining from checkpoint ``parent`` for ``steps``
    (``parent=None``: the cluster alone from scratch, the split-at-zero baseline).

    Put these after the user's overrides: they are what makes the run a branch.
    """
    start = [f"init.checkpoint={parent}"] if parent is not None else []
    return [
        f"run_dir={run_dir}",
        *start,
        f"train.steps={steps}",
        f"train.eval_every={steps}",
        "train.eval_at_start=true",  # the parent's loss on this cluster: the branch's step 0
        f"optim.schedule.warmup_steps={max(1, steps // 10)}",
        *data_overrides(clusters.branch(cluster)),
    ]
