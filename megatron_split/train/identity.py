"""What a run is, recorded in every checkpoint: its config hash, code version and its place
in L(N, D, D'), and the check that a resumed run is still the run that was saved.

The hash covers the *semantic* config: everything that changes what the run computes.
Operational fields (where the run lives, its parallel layout, logging, checkpoint cadence,
evaluation, the attention kernel) are left out, so a run may resume at another layout or
log differently and still be the same run. The parent checkpoint is checked by lineage
(path, step, tokens, config hash) rather than by the ``init`` section's spelling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# Dotted paths (a section, or one field) that do not change what a run computes.
OPERATIONAL = frozenset(
    {
        "run_dir",
        "parallel",
        "init",
        "checkpoint",
        "train.stop_at_step",  # a segment of the run: where this invocation ends
        "train.log_every",
        "train.progress",
        "train.tensorboard",
        "train.peak_flops_per_device",
        "train.micro_batch",
        "train.eval_every",
        "train.eval_batches",
        "train.eval_at_start",
        "model.attention",
        "model.recompute",
        "data.cache_dir",
    }
)

# Shard prefixes: the same shards however they are spelt (relative to the directory a run
# was started from, absolute, through a symlink).
SHARD_FIELDS = frozenset({"data.paths"})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def semantic_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The config's fields, flattened to dotted paths, without the operational ones."""
    return {
        path: value
        for path, value in _flatten(config).items()
        if not any(path == op or path.startswith(f"{op}.") for op in OPERATIONAL)
    }


def config_hash(config: dict[str, Any]) -> str:
    """A short hash of the semantic config (``asdict`` of a RunConfig)."""
    canonical = json.dumps(semantic_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_diff(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> list[str]:
    """``field: saved -> current`` for every semantic field that differs; a field the saved
    config predates counts at its value in ``defaults`` (the config class's defaults)."""
    old = {**semantic_fields(defaults or {}), **semantic_fields(saved)}
    new = semantic_fields(current)
    return [
        f"{path}: {old.get(path)} -> {new.get(path)}"
        for path in sorted(old.keys() | new.keys())
        if _comparable(path, old.get(path)) != _comparable(path, new.get(path))
    ]


def _comparable(path: str, value: Any) -> Any:
    """A field's value as compared: shard prefixes by the data files they resolve to."""
    if path in SHARD_FIELDS and value:
        return [os.path.realpath(f"{prefix}.bin") for prefix in value]
    return value


@functools.cache
def code_version() -> str:
    """The package version, with the git commit of its source tree when it has one
    (``+dirty`` when tracked files differ from it)."""
    version = metadata.version("megatron-split")
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.TimeoutExpired):
        return version
    if not commit:
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def run_identity(arm: str, cluster: int | None, run_config: dict[str, Any]) -> dict[str, Any]:
    """What a run is, as every checkpoint of it records: arm, cluster, config hash and
    code version (its law coordinates are added per checkpoint)."""
    return {"arm": arm, "cluster": cluster, "config_hash": config_hash(run_config),
            "code_version": code_version()}  # fmt: skip


def law_coordinates(arm: str, tokens: int, parent_tokens: int | None) -> dict[str, int]:
    """A checkpoint's D (pretraining tokens) and D' (specialisation tokens).

    A specialist's D is its trunk's tokens and D' its own; every other run, continued or
    not, is pretraining on the mixture: D counts all its tokens (the standard arm's D is
    the trunk's D plus its own k D') and D' is 0.
    """
    inherited = parent_tokens or 0
    if arm == "specialist":
        return {"D": inherited, "D_prime": tokens}
    return {"D": inherited + tokens, "D_prime": 0}
