"""Train/validation datasets from Megatron indexed shards, through megatron.core's builder.

The blend (shard prefixes + weights) goes to ``BlendedMegatronDatasetBuilder`` + ``GPTDataset``
unchanged, so the sample order, the cached indices and the held-out split are megatron's own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from megatron_split.config import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)  # shard prefixes (PREFIX.bin / PREFIX.idx)
    weights: list[float] | None = None  # None: each shard in proportion to its size
    split: str = "98,2,0"  # train, validation, test shares of every shard's documents
    seed: int = 1234  # the order of the training samples
    heldout_seed: int = 1234  # of the validation samples: the same in every run
    cache_dir: str | None = None  # None: <run dir>/data_cache
    eod_mask_loss: bool = False
    # Or a cluster directory (`msplit data cluster`): its mixture at natural token shares
    # (or at ``weights``, one per cluster), or ``cluster`` alone. Paths, weights and split
    # are read from its manifest when the run starts (resolve()), so a run can be planned
    # before its clusters exist; paths, once given, are used as they are.
    clusters: str | None = None
    cluster: int | None = None

    def __post_init__(self) -> None:
        self.paths = [shard_prefix(path) for path in self.paths]

    def resolve(self) -> DataConfig:
        """This config with paths, weights and split read from ``clusters`` (when given)."""
        if self.clusters is None or self.paths:
            return self
        from megatron_split.data.clusters import ClusterDataConfig

        try:
            data = ClusterDataConfig(self.clusters, self.seed, self.cache_dir).build()
            chosen = data.trunk(self.weights) if self.cluster is None else data.branch(self.cluster)
        except ConfigError as error:
            raise ConfigError(f"data: {error}") from None
        return replace(
            chosen,
            heldout_seed=self.heldout_seed,
            clusters=self.clusters,
            cluster=self.cluster,
            eod_mask_loss=self.eod_mask_loss,
        )

    def validate(self) -> None:
        if self.clusters is not None and not self.paths:
            self.resolve().validate()
            return
        if not self.paths:
            raise ConfigError(
                "data.paths is empty: give at least one shard prefix (or data.clusters)"
            )
        for prefix in self.paths:
            if not Path(prefix + ".bin").is_file():
                raise ConfigError(
                    f"data.paths: {prefix}.bin does not exist "
                    f"(write shards with `msplit data tokenize`)"
                )
        shard_vocab(self.paths)  # complete shards of one tokenizer
        if self.weights is not None:
            if len(self.weights) != len(self.paths):
                raise ConfigError(
                    f"data.weights has {len(self.weights)} entries for {len(self.paths)} paths"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ConfigError("data.weights must be non-negative with a positive sum")
        try:
            shares = [float(x) for x in self.split.split(",")]
        except ValueError:
            shares = []
        if len(shares) != 3 or any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ConfigError(f"data.split={self.split!r}: expected three shares like '98,2,0'")
        self._check_validation_splits()

    def _check_validation_splits(self) -> None:
        """megatron-core 0.16 never finishes building a blend in which one shard's validation
        split holds no document: refuse it here, naming the shard."""
        from data_prep.shards import heldout_range, read_manifest

        if float(self.split.split(",")[1]) == 0:
            return
        for prefix in self.paths:
            documents = int(read_manifest(prefix)["documents"])
            first, last = heldout_range(self.split, documents)
            if last == first:
                raise ConfigError(
                    f"data.split={self.split!r} holds out no document of {prefix} "
                    f"({documents} documents): raise the validation share or give more data"
                )

    def build(
        self,
        tokenizer,
        seq_length: int,
        train_samples: int,
        valid_samples: int,
        cache_dir: str | Path,
    ):
        """Return (train, validation) GPTDatasets; validation is None when its share is 0.

        The training samples are shuffled with ``seed``, the validation samples always with
        ``heldout_seed``: every run of the same shards validates on the same samples."""
        from megatron.core.datasets.blended_megatron_dataset_builder import (
            BlendedMegatronDatasetBuilder,
        )
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

        weights = self.weights if self.weights is None else [float(w) for w in self.weights]

        def build(seed: int, sizes: list[int]):
            config = GPTDatasetConfig(
                random_seed=seed,
                sequence_length=seq_length,
                blend=(list(self.paths), weights),
                split=self.split,
                path_to_cache=str(self.cache_dir or cache_dir),
                tokenizer=tokenizer,
                reset_position_ids=False,
                reset_attention_mask=False,
                eod_mask_loss=self.eod_mask_loss,
                create_attention_mask=False,  # causal attention needs no mask tensor
                mid_level_dataset_surplus=0.005,
            )
            return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()

        train, valid, _ = build(self.seed, [train_samples, valid_samples, 0])
        if self.seed != self.heldout_seed:
            _, valid, _ = build(self.heldout_seed, [1, valid_samples, 0])
        return train, valid


def passes_over_data(train: Any, samples: int, seq_length: int) -> dict[str, float]:
    """How many times a run of ``samples`` training samples reads each shard's training
    split (megatron repeats data silently): ``{shard prefix: passes}``."""
    parts = getattr(train, "datasets", None) or [train]  # a blend, or one GPTDataset
    total = sum(len(part) for part in parts)
    passes = {}
    for part in parts:
        # A blend without weights holds one epoch of each shard and is read round and
        # round, each shard in proportion to its size; otherwise a part holds what is read.
        read = part.num_samples if part.num_samples is not None else samples * len(part) / total
        tokens = int(part.dataset.sequence_lengths[part.indices].sum())
        passes[part.dataset_path] = read * seq_length / max(tokens, 1)
    return passes


def shard_prefix(path: str) -> str:
    """The prefix of a shard named by its prefix or by one of its files (PREFIX.bin, .idx)."""
    root, suffix = os.path.splitext(path)
    return root if suffix in (".bin", ".idx") else path


def shard_vocab(prefixes: list[str]) -> tuple[int, int]:
    """(vocab size, EOD id) shared by the shards, from their manifests."""
    from data_prep.shards import ShardError, read_manifest

    found = set()
    for prefix in prefixes:
        try:
            manifest = read_manifest(prefix)
        except ShardError as e:
            raise ConfigError(f"data.paths: {e}") from None
        found.add((int(manifest["vocab_size"]), int(manifest["eod_id"])))
    if len(found) != 1:
        raise ConfigError(f"data.paths mix tokenizers (vocab size, EOD id): {sorted(found)}")
    return found.pop()


def dataset_tokenizer(prefixes: list[str]):
    """What megatron's GPTDataset reads of a tokenizer (vocab size, EOD), from the manifests."""
    from data_prep.tokenizers import megatron_tokenizer

    vocab_size, eod_id = shard_vocab(prefixes)
    return megatron_tokenizer(vocab_size=vocab_size, eod_id=eod_id)


def shards_tokenizer(prefixes: list[str]):
    """The text tokenizer recorded in the shards' manifests (a run's shards share one)."""
    from data_prep.shards import read_manifest
    from data_prep.tokenizers import load_tokenizer

    shard_vocab(prefixes)  # the same tokenizer throughout, or a clear error
    return load_tokenizer(read_manifest(prefixes[0])["tokenizer"])


def checkpoint_tokenizer(meta: dict[str, Any]):
    """The tokenizer a checkpoint's model reads: the one it records (an imported model's
    own), else its shards'."""
    from data_prep.tokenizers import load_tokenizer

    if meta.get("tokenizer"):
        return load_tokenizer(meta["tokenizer"])
    return shards_tokenizer(meta["config"]["data"]["paths"])


def check_shards_tokenizer(meta: dict[str, Any], prefixes: list[str], where: str) -> None:
    """Refuse shards tokenized otherwise than the checkpoint's model reads (``where`` names
    the checkpoint): the same ids would be other tokens."""
    from data_prep.shards import read_manifest
    from data_prep.tokenizers import tokenizer_identity

    if not meta.get("tokenizer"):
        return  # a model trained here read its shards' tokenizer, checked with the shards
    wanted = tokenizer_identity(meta["tokenizer"])
    for prefix in prefixes:
        spec = read_manifest(prefix)["tokenizer"]
        if tokenizer_identity(spec) != wanted:
            raise ConfigError(
                f"data.paths: {prefix} was tokenized with {spec.get('path')}, but {where} "
                f"reads {meta['tokenizer']['path']}: tokenize the corpus with "
                f"--tokenizer hf:{Path(meta['tokenizer']['path']).parent}"
            )
