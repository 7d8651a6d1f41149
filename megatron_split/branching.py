"""The runs of a split family, as config overrides: a trunk on the cluster mixture, one
branch per cluster continued from a trunk checkpoint, and the standard arm (the same trunk
checkpoint continued on the mixture).

All are ordinary training runs of the same base config: what makes a run the trunk is its
data (every cluster at its natural token share), what makes it a branch is
``init.checkpoint`` (weights from the trunk, lineage recorded) plus one cluster's data, and
what makes it the standard arm is ``init.checkpoint`` plus the trunk's mixture. Data are
named by cluster directory (``data.clusters``), so runs can be planned before the clusters
exist. Every override list here goes after the user's: it is what makes the run what it is.
"""

from __future__ import annotations

from pathlib import Path


def trunk_overrides(clusters: str | Path, run_dir: str | Path) -> list[str]:
    """The trunk: all clusters at their natural token shares."""
    return [f"run_dir={run_dir}", f"data.clusters={clusters}", "role.arm=trunk"]


def branch_overrides(
    clusters: str | Path,
    cluster: int,
    parent: str | Path | None,
    run_dir: str | Path,
    steps: int,
) -> list[str]:
    """Cluster ``cluster``'s continued pretraining from checkpoint ``parent`` for ``steps``
    (``parent=None``: the cluster alone from scratch, the split-at-zero baseline)."""
    return [
        *_continued(parent, run_dir, steps),
        f"data.clusters={clusters}",
        f"data.cluster={cluster}",
        "role.arm=specialist",
        f"role.cluster={cluster}",
    ]


def standard_overrides(
    clusters: str | Path,
    parent: str | Path | None,
    run_dir: str | Path,
    steps: int,
    global_batch: int,
    arm: str = "standard",
) -> list[str]:
    """The trunk checkpoint ``parent`` continued on the trunk's own mixture: standard
    pretraining, the arm split training is compared with at equal compute (``parent=None``:
    the mixture alone from scratch)."""
    return [
        *_continued(parent, run_dir, steps),
        f"train.global_batch={global_batch}",
        f"data.clusters={clusters}",
        f"role.arm={arm}",
    ]


def _continued(parent: str | Path | None, run_dir: str | Path, steps: int) -> list[str]:
    start = [f"init.checkpoint={parent}"] if parent is not None else []
    return [
        f"run_dir={run_dir}",
        *start,
        f"train.steps={steps}",
        f"train.eval_every={steps}",
        "train.eval_at_start=true",  # the parent's loss on this run's data: its step 0
    ]
