"""Cluster-aware data: the trunk mixture, each branch's cluster, per-cluster held-out sets.

Reads the manifest ``msplit data cluster`` writes and turns it into :class:`DataConfig`
objects, so every dataset here is built by megatron.core's ``BlendedMegatronDatasetBuilder``
exactly as any other run's data:

- trunk: all cluster shards blended at their natural weights (token shares) or at given
  weights; clusters given weight 0 are left out of the blend (megatron cannot sample a
  dataset of probability 0);
- branch i: cluster i's shard alone;
- held-out set i: the validation split of cluster i's shard. Trunk, branch and evaluation
  use the manifest's split on the same shard, so the held-out documents of a cluster are
  the same everywhere and never trained on.

Sample order is a pure function of (shards, weights, split, seed, sizes): building a dataset
twice gives the same samples, and a run resumed at ``consumed_samples`` reads on from there
(see :mod:`megatron_split.data.batches`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron_split.config import ConfigError
from megatron_split.data.datasets import DataConfig

CLUSTERS_FORMAT = "megatron-split/clusters/v1"


@dataclass
class ClusterDataConfig:
    clusters: str  # directory (or clusters.json) written by `msplit data cluster`
    seed: int = 1234
    cache_dir: str | None = None

    def build(self) -> ClusterData:
        return ClusterData(self)


class ClusterData:
    def __init__(self, config: ClusterDataConfig):
        self.config = config
        path = Path(config.clusters)
        self.manifest_path = path / "clusters.json" if path.is_dir() else path
        try:
            self.manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError) as error:
            raise ConfigError(
                f"{self.manifest_path}: no readable cluster manifest ({error})"
            ) from error
        if self.manifest.get("format") != CLUSTERS_FORMAT:
            raise ConfigError(
                f"{self.manifest_path}: format is {self.manifest.get('format')!r}, "
                f"expected {CLUSTERS_FORMAT!r}"
            )
        self.directory = self.manifest_path.parent
        self.prefixes = [str(self.directory / c["prefix"]) for c in self.manifest["clusters"]]
        self.split = str(self.manifest["split"])

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    def natural_weights(self) -> list[float]:
        return [float(c["weight"]) for c in self.manifest["clusters"]]

    def trunk(self, weights: Sequence[float] | Mapping[int, float] | None = None) -> DataConfig:
        """The mixture of all clusters: natural weights, a list of k, or {cluster: weight}."""
        chosen = self._weights(weights)
        keep = [i for i, w in enumerate(chosen) if w > 0]
        return self._config(keep, [chosen[i] for i in keep])

    def branch(self, cluster: int) -> DataConfig:
        """Cluster `cluster` alone, with the same held-out split as in the trunk."""
        return self._config([self._check(cluster)], None)

    def heldout(self, cluster: int, seq_length: int, samples: int, cache_dir: str | Path) -> Any:
        """Cluster `cluster`'s held-out GPTDataset (the validation split of its shard)."""
        _, valid = self.branch(cluster).build(
            self.tokenizer(),
            seq_length,
            train_samples=1,
            valid_samples=samples,
            cache_dir=cache_dir,
        )
        return valid

    def tokenizer(self) -> Any:
        from data_prep.tokenizers import megatron_tokenizer

        return megatron_tokenizer(
            vocab_size=int(self.manifest["vocab_size"]), eod_id=int(self.manifest["eod_id"])
        )

    def _config(self, clusters: list[int], weights: list[float] | None) -> DataConfig:
        # megatron never finishes building a split without documents: refuse it here.
        empty = [c for c in clusters if self.manifest["clusters"][c]["heldout"]["documents"] == 0]
        if empty:
            raise ConfigError(
                f"{self.manifest_path}: clusters {empty} have no held-out document at split "
                f"{self.split}; re-cluster with a larger held-out share or give them weight 0"
            )
        paths = [self.prefixes[c] for c in clusters]
        config = DataConfig(
            paths=paths,
            weights=weights,
            split=self.split,
            seed=self.config.seed,
            cache_dir=self.config.cache_dir,
        )
        config.validate()
        return config

    def _weights(self, weights: Sequence[float] | Mapping[int, float] | None) -> list[float]:
        if weights is None:
            return self.natural_weights()
        if isinstance(weights, Mapping):
            for cluster in weights:
                self._check(int(cluster))
            chosen = [float(weights.get(i, 0.0)) for i in range(self.k)]
        else:
            chosen = [float(w) for w in weights]
            if len(chosen) != self.k:
                raise ConfigError(f"trunk weights: {len(chosen)} given for k={self.k} clusters")
        if any(not math.isfinite(w) or w < 0 for w in chosen) or sum(chosen) <= 0:
            raise ConfigError(f"trunk weights {chosen}: need finite, >= 0, positive sum")
        return chosen

    def _check(self, cluster: int) -> int:
        if not 0 <= cluster < self.k:
            raise ConfigError(f"cluster {cluster} out of range: the manifest has k={self.k}")
        return cluster
