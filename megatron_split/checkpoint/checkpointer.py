"""Atomic, resharding checkpoints through megatron.core ``dist_checkpointing``.

Layout of ``<run>/checkpoints``::

    step_000100/          model + optimizer (torch_dist, loadable at any TP/PP/DP)
        meta.json         step, consumed samples, tokens, parallel layout, config, lineage,
                          and the run's identity (arm, D, D', config hash, code version)
        rng/rank_00000.pt every RNG of each rank (restored when the layout is unchanged)
    latest                the name of the newest complete checkpoint

A checkpoint is written under ``step_000100.tmp`` and renamed only after every rank has
finished, ``meta.json`` is fsynced and ``latest`` is replaced atomically; so a directory
without ``.tmp`` is always complete, and a crash mid-save leaves only a ``.tmp`` that the
next save removes. A synchronous save is written by the training process itself
(:mod:`.inprocess_save`). With ``checkpoint.async_save`` the model and optimizer are written by a
background process (megatron.core's async ``dist_checkpointing``) while training goes on,
and the rename and ``latest`` happen once every rank's write has finished: a kill during
the write leaves the previous ``latest``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from megatron_split.config import ConfigError
from megatron_split.runtime import rng_state, set_rng_state

log = logging.getLogger(__name__)

LATEST = "latest"
META = "meta.json"
# The distributed optimizer's default format (fully_sharded_model_space) cannot be saved by
# megatron-core 0.16 ("flattened_range is not supported"); dp_reshardable saves and loads.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


@dataclass
class CheckpointConfig:
    every: int = 0  # steps between saves; 0 = only at the end and on preemption signals
    keep_last: int = 3  # complete checkpoints kept (older ones are deleted)
    save_at_end: bool = True
    resume: bool = True  # resume from <run>/checkpoints/latest when it exists
    # Resume even when the config or the parent checkpoint differs from the saved run's
    # (a resumed run is otherwise refused with the differing fields).
    allow_changes: bool = False
    # Steps always saved and never deleted: the split points that branches start from.
    keep_steps: list[int] = field(default_factory=list)
    # Write in the background while the next steps train; one write at a time (a save
    # waits for the previous one), and the end of the run waits for the last.
    async_save: bool = False

    def validate(self) -> None:
        if self.every < 0:
            raise ConfigError("checkpoint.every must be >= 0")
        if self.keep_last < 1:
            raise ConfigError("checkpoint.keep_last must be >= 1")
        if any(step < 1 for step in self.keep_steps):
            raise ConfigError(f"checkpoint.keep_steps must be >= 1, not {self.keep_steps}")

    def saves_at(self, step: int) -> bool:
        return bool(self.every and step % self.every == 0) or step in self.keep_steps

    def kept_steps(self, steps: int) -> list[int]:
        """The checkpoints a run of ``steps`` steps ends with (after pruning)."""
        saved = {s for s in range(1, steps + 1) if self.saves_at(s)}
        saved |= {steps} if self.save_at_end else set()
        pinned = saved & set(self.keep_steps)
        return sorted(pinned | set(sorted(saved - pinned)[-self.keep_last :]))


@dataclass
class TrainState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0
    consumed_samples: int = 0
    tokens: int = 0
    lineage: dict[str, Any] = field(default_factory=dict)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None before the first save.

    ``latest`` names it; when that checkpoint is gone (deleted by hand), the newest complete
    one left is taken instead, with a warning, and FileNotFoundError says so when none is."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if (path / META).is_file():
        return path
    left = complete_checkpoints(root)
    if not left:
        raise FileNotFoundError(
            f"{pointer} names {path.name}, which has no {META}, and no complete checkpoint is "
            f"left: remove {pointer} to start the run afresh"
        )
    log.warning("%s names %s, which has no %s: using %s", pointer, path.name, META, left[-1])
    return left[-1]


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Every complete checkpoint under ``root``, oldest first."""
    steps = Path(root).glob("step_*")
    return sorted(p for p in steps if p.suffix != ".tmp" and (p / META).is_file())


def read_meta(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / META).read_text())


def _layout() -> dict[str, int]:
    from megatron.core import parallel_state as ps

    return {
        "tensor": ps.get_tensor_model_parallel_world_size(),
        "pipeline": ps.get_pipeline_model_parallel_world_size(),
        "data": ps.get_data_parallel_world_size(),
    }


def _adam_states(optimizer):
    """(param, state) of every torch Adam inside a megatron (chained) optimizer."""
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_optimizer = inner.optimizer
        for group in torch_optimizer.param_groups:
            for param in group["params"]:
                yield param, torch_optimizer.state[param]


def _materialize_adam_state(optimizer) -> None:
    """Give every parameter the (zero) Adam state torch creates lazily at the first step.

    megatron's distributed optimizer builds its load template from the inner optimizer's
    state and asserts that it exists; a freshly built torch AdamW has none yet.
    """
    for param, state in _adam_states(optimizer):
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)


def _restore_distributed_adam_steps(optimizer, loaded: dict[str, Any]) -> None:
    """Repair Adam's step counters after a distributed-optimizer load (torch Adam fallback).

    megatron restores the step into the param groups, then overwrites every parameter's
    step with the load template's and shares one tensor among all parameters (which Adam
    would increment once per parameter per step). Give each parameter its own counter, set
    from the saved param groups, so that bias correction resumes exactly.
    """
    if "param_state_sharding_type" not in loaded:
        return  # not a distributed-optimizer state: torch restored the steps itself
    (step,) = {group["step"] for group in loaded["optimizer"]["param_groups"]}
    for _, state in _adam_states(optimizer):
        state["step"] = torch.tensor(float(step))


class Checkpointer:
    def __init__(self, cfg: CheckpointConfig, root: str | Path):
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        self.cfg = cfg
        self.root = Path(root)
        # A process forked per save writes a copy-on-write snapshot of the tensors, so the
        # training that goes on cannot change what it writes.
        self.writes = AsyncCallsQueue(persistent=False) if cfg.async_save else None

    # ---- save ------------------------------------------------------------------------
    def save(
        self,
        model,
        optimizer,
        state: TrainState,
        run_config: dict[str, Any],
        identity: dict[str, Any],
        tokenizer: dict[str, Any] | None = None,
    ) -> Path:
        """Save a checkpoint of ``state``; ``identity`` (what the run is: arm, D, D', config
        hash, code version) goes into its meta.json beside the config, and ``tokenizer``
        (a spec) when the model reads another one than its shards' (an imported model).
        Without an optimizer only the weights are saved. With async saves it returns once
        the write has started; :meth:`wait` or a later :meth:`poll` publishes it."""
        from megatron.core import dist_checkpointing

        from megatron_split.checkpoint.inprocess_save import InProcessTorchDistSave

        self.wait()  # one write at a time, published in order
        rank = dist.get_rank()
        final = self.root / step_dir_name(state.step)
        tmp = final.with_name(final.name + ".tmp")
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()

        model_sd = model.sharded_state_dict()
        sharded = {"model": model_sd}
        if optimizer is not None:
            sharded["optimizer"] = optimizer.sharded_state_dict(
                model_sd, metadata=OPTIMIZER_METADATA
            )
        meta = {
            "step": state.step,
            "consumed_samples": state.consumed_samples,
            "tokens": state.tokens,
            "lineage": dict(state.lineage),
            "run": identity,
            "layout": _layout(),
            "world_size": dist.get_world_size(),
            "config": run_config,
            "optimizer": optimizer is not None,
            **({"tokenizer": tokenizer} if tokenizer else {}),
        }
        background = self.writes is not None
        request = dist_checkpointing.save(
            sharded,
            str(tmp),
            sharded_strategy=None if background else InProcessTorchDistSave(),
            async_sharded_save=background,
        )
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), tmp / "rng" / f"rank_{rank:05d}.pt")
        if background:  # published by poll() or wait() once every rank's write is done
            request.add_finalize_fn(functools.partial(self._publish, tmp, final, meta))
            self.writes.schedule_async_request(request)
        else:
            self._publish(tmp, final, meta)
        return final

    def _publish(self, tmp: Path, final: Path, meta: dict[str, Any]) -> None:
        """On every rank, once every rank's write is done: rename, then flip ``latest``."""
        dist.barrier()
        if dist.get_rank() == 0:
            write_atomic(tmp / META, json.dumps(meta, indent=2))
            shutil.rmtree(final, ignore_errors=True)  # a re-save of the same step
            os.replace(tmp, final)
            write_atomic(self.root / LATEST, final.name)
            self._prune()
        dist.barrier()
        log.info("saved checkpoint %s", final)

    def poll(self) -> None:
        """Publish a background write that has finished on every rank (all ranks call it,
        at the same step)."""
        if self.writes is not None and self.writes.get_num_unfinalized_calls():
            self.writes.maybe_finalize_async_calls(blocking=False)

    def wait(self) -> None:
        """Finish and publish the background write, if any."""
        if self.writes is not None and self.writes.get_num_unfinalized_calls():
            self.writes.maybe_finalize_async_calls(blocking=True)

    def _prune(self) -> None:
        kept = {step_dir_name(step) for step in self.cfg.keep_steps}
        complete = [p for p in complete_checkpoints(self.root) if p.name not in kept]
        for old in complete[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.root.glob("step_*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)

    # ---- load ------------------------------------------------------------------------
    def load_weights(self, path: str | Path, model, optimizer, load_optimizer: bool) -> dict:
        """Load the model (and optimizer) of checkpoint ``path`` at the current layout,
        resharding as needed; returns its meta."""
        from megatron.core import dist_checkpointing

        meta = read_meta(path)
        if load_optimizer and not meta.get("optimizer", True):
            raise ConfigError(
                f"{path} holds weights only (no optimizer state): set init.load_optimizer=false"
            )
        model_sd = model.sharded_state_dict()
        sharded: dict[str, Any] = {"model": model_sd}
        if load_optimizer:
            _materialize_adam_state(optimizer)
            sharded["optimizer"] = optimizer.sharded_state_dict(
                model_sd, is_loading=True, metadata=OPTIMIZER_METADATA
            )
        loaded = dist_checkpointing.load(sharded, str(path))
        with torch.no_grad():  # the distributed optimizer copies into leaf views of params
            model.load_state_dict(loaded["model"])
            if load_optimizer:
                optimizer.load_state_dict(loaded["optimizer"])
                _restore_distributed_adam_steps(optimizer, loaded["optimizer"])
        return meta

    def resume(self, path: str | Path, model, optimizer) -> TrainState:
        """Continue this run from its checkpoint ``path``: weights, optimizer, position, RNG.

        RNG states are restored only when the parallel layout is the saved one: under a new
        layout each rank's streams are different objects, and they are seeded afresh.
        """
        path = Path(path)
        meta = self.load_weights(path, model, optimizer, load_optimizer=True)
        rng_file = path / "rng" / f"rank_{dist.get_rank():05d}.pt"
        if meta["layout"] == _layout() and rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=False))
        else:
            log.warning(
                "checkpoint layout %s differs from this run's %s: RNG states are not restored",
                meta["layout"],
                _layout(),
            )
        return TrainState(
            step=meta["step"],
            consumed_samples=meta["consumed_samples"],
            tokens=meta["tokens"],
            lineage=meta.get("lineage", {}),
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a step directory, a checkpoints/ root or a run directory."""
    path = Path(path)
    if (path / META).is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(
        f"{path}: no checkpoint here (expected a step_N directory with {META}, or a run or "
        f"checkpoints directory with a `{LATEST}` file)"
    )
