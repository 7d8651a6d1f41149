"""The config of one training run (a trunk, or later a branch): a tree of component configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from megatron_split.checkpoint import CheckpointConfig, read_meta, resolve_checkpoint
from megatron_split.config import ConfigError
from megatron_split.data import DataConfig
from megatron_split.model import ModelConfig
from megatron_split.optim import OptimConfig


@dataclass
class ParallelConfig:
    tensor: int = 1
    pipeline: int = 1
    distributed_optimizer: bool = False

    def validate(self) -> None:
        if self.tensor < 1 or self.pipeline < 1:
            raise ConfigError("parallel.tensor and parallel.pipeline must be >= 1")


@dataclass
class LoopConfig:
    steps: int = 100
    # End this invocation after this step, one segment of the run (a trunk that stops at
    # each split point): the LR schedule and data order stay those of ``steps``, the
    # checkpoint at the stop is saved, and the next invocation resumes from it.
    stop_at_step: int | None = None
    global_batch: int = 16  # sequences per optimizer step, over all data-parallel ranks
    micro_batch: int = 4  # sequences per forward/backward on one rank
    log_every: int = 10
    eval_every: int = 50  # 0 = never; validation also runs after the last step
    eval_batches: int = 4  # global batches of validation data per evaluation
    eval_at_start: bool = False  # also before the first step (e.g. a parent on a new domain)
    peak_flops_per_device: float | None = None  # for MFU; None: known GPUs only
    tensorboard: bool = True
    progress: bool = True  # a bar, on a terminal (a piped log gets lines with the time left)

    # The least value of each integer field (stop_at_step is checked against steps).
    MINIMUMS: ClassVar[dict[str, int]] = {
        "steps": 1,
        "global_batch": 1,
        "micro_batch": 1,
        "log_every": 1,
        "eval_every": 0,
        "eval_batches": 1,
    }

    @property
    def end_step(self) -> int:
        """The step this invocation trains to."""
        return self.stop_at_step or self.steps

    def validate(self) -> None:
        for name, least in self.MINIMUMS.items():
            if getattr(self, name) < least:
                raise ConfigError(f"train.{name} must be >= {least}, got {getattr(self, name)}")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.steps:
            raise ConfigError(
                f"train.stop_at_step must be in 1..train.steps={self.steps}, "
                f"got {self.stop_at_step}"
            )
        peak = self.peak_flops_per_device
        if peak is not None and peak <= 0:
            raise ConfigError(f"train.peak_flops_per_device must be > 0 (or null), got {peak}")


@dataclass
class InitConfig:
    """Start from another run's checkpoint: continued pretraining, e.g. a branch of a trunk.

    Carried over: the weights (loaded in place from the parent checkpoint, resharded to this
    run's layout, never copied), and Adam's moments and step count only with
    ``load_optimizer``. Started afresh: step 0, data position 0 on this run's data, this
    run's LR schedule from its own step 0 (warmup from ``optim.schedule.start_lr``: set it to
    rewarm from a given LR), RNG streams from this run's seed. The parent, its step and
    tokens go into this run's lineage. Applies only while this run has no checkpoint of its
    own: a restarted branch resumes itself, not the parent.

    ``model_from_parent`` takes the parent's architecture instead of ``model``'s (every
    field but how this run computes: sequence length under RoPE, attention kernel, dtype,
    recompute, dropout), as a branch of a released model imported with ``import-hf`` wants.
    """

    checkpoint: str | None = None  # a step_N directory, or a run / checkpoints directory
    load_optimizer: bool = False
    model_from_parent: bool = False

    def validate(self) -> None:
        if self.checkpoint is not None:
            try:
                resolve_checkpoint(self.checkpoint)
            except FileNotFoundError as e:
                raise ConfigError(f"init.checkpoint: {e}") from None


@dataclass
class RoleConfig:
    """What this run is in a split experiment. Changes nothing in training; recorded in every
    checkpoint, with the run's place in L(N, D, D') that follows from it (see
    megatron_split.train.identity.law_coordinates)."""

    arm: Literal["run", "trunk", "specialist", "standard", "standard_per_model"] = "run"
    cluster: int | None = None  # a specialist's cluster

    def validate(self) -> None:
        if (self.arm == "specialist") != (self.cluster is not None):
            raise ConfigError(
                f"role.cluster={self.cluster} with role.arm={self.arm}: a specialist names its "
                "cluster, and only a specialist does"
            )


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    seed: int = 1234
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    role: RoleConfig = field(default_factory=RoleConfig)

    def resolve(self) -> RunConfig:
        """Fill in what the run's inputs decide, in place: the shards of ``data.clusters``,
        the parent's architecture with ``init.model_from_parent``, and ``model.vocab_size``
        from the shards' manifests unless given."""
        from megatron_split.data.datasets import shard_vocab

        if self.init.model_from_parent and self.init.checkpoint is not None:
            parent = read_meta(resolve_checkpoint(self.init.checkpoint))
            self.model = self.model.with_architecture(parent["config"]["model"])
        self.data = self.data.resolve()
        vocab_size, _ = shard_vocab(self.data.paths)
        if self.model.vocab_size is None:
            self.model.vocab_size = vocab_size
        elif self.model.vocab_size < vocab_size:
            raise ConfigError(
                f"model.vocab_size={self.model.vocab_size} is smaller than the shards' {vocab_size}"
            )
        return self

    def validate(self, world_size: int | None = None, inputs: bool = True) -> None:
        """Check everything that can be checked before a process group exists; with
        ``inputs=False``, all but what needs the run's inputs on disk (its data and parent
        checkpoint), so that a run can be planned before they exist."""
        _check_run_dir(self.run_dir)
        self.role.validate()
        self.parallel.validate()
        self.train.validate()
        self.checkpoint.validate()
        if inputs:
            self.init.validate()
            self.data.validate()
        self.optim.validate(self.train.steps)
        self.model.validate(self.parallel.tensor, self.parallel.pipeline)
        if world_size is not None:
            model_parallel = self.parallel.tensor * self.parallel.pipeline
            if world_size % model_parallel:
                raise ConfigError(
                    f"world size {world_size} is not divisible by parallel.tensor x "
                    f"parallel.pipeline = {model_parallel}"
                )
            dp = world_size // model_parallel
            if self.train.global_batch % (self.train.micro_batch * dp):
                raise ConfigError(
                    f"train.global_batch={self.train.global_batch} is not divisible by "
                    f"train.micro_batch={self.train.micro_batch} x data-parallel size {dp}"
                )


def _check_run_dir(run_dir: str) -> None:
    """A run directory must be one, or be creatable: nothing on its path is a file."""
    path = Path(run_dir)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"run_dir={run_dir}: {existing} is a file, not a directory")
