"""The training loop shared by the trunk and every branch.

Straight-line on purpose: build, maybe resume, then for each step set the LR, run megatron's
forward-backward schedule over this rank's micro-batches, step the optimizer, log, evaluate,
checkpoint, and check for preemption. Everything a resumed run needs is in the checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from megatron_split.checkpoint import (
    Checkpointer,
    TrainState,
    latest_checkpoint,
    read_meta,
    resolve_checkpoint,
)
from megatron_split.config import ConfigError
from megatron_split.data import step_microbatches
from megatron_split.data.datasets import (
    check_shards_tokenizer,
    dataset_tokenizer,
    passes_over_data,
)
from megatron_split.runtime import Runtime, init_distributed, seed_everything
from megatron_split.train.config import RunConfig
from megatron_split.train.identity import config_diff, law_coordinates, run_identity
from megatron_split.train.metrics import MetricsSink, Throughput
from megatron_split.train.signals import PreemptionFlag

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s of GPUs we know, by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12}

# Model fields that change parameter shapes: a checkpoint resumes only when they match.
SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "ffn_hidden_size",
    "vocab_size",
    "position_embedding",
    "normalization",
    "activation",
    "tie_embeddings",
    "bias",
    "qkv_bias",
)


def peak_flops(cfg: RunConfig) -> float | None:
    if cfg.train.peak_flops_per_device:
        return cfg.train.peak_flops_per_device
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return None


def build_bare_model(cfg: RunConfig, device: torch.device):
    """This rank's GPT chunk on ``device``, wrapped for bf16 when the run trains in bf16.
    Returns (module to call, the GPTModel inside it)."""
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.module import Float16Module

    gpt = cfg.model.build(
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
        init_seed=cfg.seed,
    )
    gpt.to(device)
    module = Float16Module(gpt.config, gpt) if cfg.model.params_dtype == "bf16" else gpt
    return module, gpt


def build_model(cfg: RunConfig, runtime: Runtime):
    """This rank's GPT chunk, wrapped for bf16 and megatron's DDP. Returns (ddp, gpt)."""
    from megatron.core.distributed import (
        DistributedDataParallel,
        DistributedDataParallelConfig,
        finalize_model_grads,
    )

    module, gpt = build_bare_model(cfg, runtime.device)
    ddp = DistributedDataParallel(
        config=gpt.config,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            use_distributed_optimizer=cfg.parallel.distributed_optimizer,
        ),
        module=module,
    )
    # The schedule calls these: DP all-reduce (and tied-embedding sync across PP) per step.
    gpt.config.no_sync_func = ddp.no_sync
    gpt.config.finalize_model_grads_func = finalize_model_grads
    return ddp, gpt


def masked_mean_loss(loss_mask_BS: torch.Tensor, output_BS: torch.Tensor):
    mask = loss_mask_BS.float()
    loss = (output_BS.float() * mask).sum() / mask.sum().clamp(min=1.0)
    # clone: the schedule divides the returned loss in place by the number of micro-batches.
    return loss, {"lm loss": loss.detach().clone()}


def make_forward_step(device: torch.device):
    def forward_step(data_iterator, model):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data_iterator).items()}
        output_BS = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        return output_BS, partial(masked_mean_loss, batch["loss_mask"])

    return forward_step


def _global_mean_loss(losses: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """The step's mean loss, as every rank sees it (only the last PP stage computes it)."""
    from megatron.core import parallel_state as ps

    owner = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
    value = torch.stack([x["lm loss"] for x in losses]).mean().item() if owner and losses else 0.0
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / ps.get_data_parallel_world_size()


def _check_same_model(cfg: RunConfig, meta: dict[str, Any], path: Path) -> None:
    saved = meta["config"]["model"]
    current = asdict(cfg.model)
    diffs = [
        f"{k}: {saved.get(k)} -> {current[k]}" for k in SHAPE_FIELDS if saved.get(k) != current[k]
    ]
    if diffs:
        raise ConfigError(f"{path} was saved with a different model ({'; '.join(diffs)})")


def check_resumable(cfg: RunConfig, meta: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint that is not this run: another model shape or global
    batch always, another semantic config or parent unless ``checkpoint.allow_changes``."""
    _check_same_model(cfg, meta, path)
    if meta["config"]["train"]["global_batch"] != cfg.train.global_batch:
        raise ConfigError(f"{path}: train.global_batch changed; the data position would not match")
    if cfg.checkpoint.allow_changes:
        return
    diffs = config_diff(meta["config"], asdict(cfg), asdict(RunConfig()))
    diffs += _parent_changes(cfg, meta.get("lineage") or {})
    if diffs:
        raise ConfigError(
            f"{path} was saved by a different run ({'; '.join(diffs)}): resume with the saved "
            "config, use a new run_dir, or set checkpoint.allow_changes=true"
        )


def _parent_changes(cfg: RunConfig, lineage: dict[str, Any]) -> list[str]:
    """How this run's parent checkpoint differs from the one it was started from."""
    if cfg.init.checkpoint is None:
        return [f"init.checkpoint: {lineage['parent']} -> None"] if lineage else []
    try:
        parent = resolve_checkpoint(cfg.init.checkpoint)
    except FileNotFoundError:
        log.warning("parent %s is gone: resuming without checking it", cfg.init.checkpoint)
        return []
    now = _parent_record(parent, read_meta(parent))
    return [
        f"lineage.{key}: {lineage.get(key)} -> {value}"
        for key, value in now.items()
        if lineage.get(key) != value
    ]


def _parent_record(parent: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "parent": str(parent.resolve()),
        "parent_step": meta["step"],
        "parent_tokens": meta["tokens"],
        "parent_config_hash": (meta.get("run") or {}).get("config_hash"),
    }


def _warn_on_repeated_data(train_data: Any, cfg: RunConfig, steps: int) -> None:
    """Say so when the run reads a shard's training split more than once: megatron repeats
    it silently, and a shard smaller than the run (often smaller than one global batch, in a
    small test) would train for many epochs without a word."""
    passes = passes_over_data(train_data, steps * cfg.train.global_batch, cfg.model.seq_length)
    shard, most = max(passes.items(), key=lambda item: item[1])
    if most > 1:
        of = f" (the most repeated of {len(passes)} shards)" if len(passes) > 1 else ""
        log.warning(
            "data: %d steps of %d x %d tokens read the training split of %s %.1f times%s; "
            "give more data or fewer steps unless repeating it is intended",
            steps, cfg.train.global_batch, cfg.model.seq_length, shard, most, of,
        )  # fmt: skip


def _latest_checkpoint(root: Path) -> Path | None:
    try:
        return latest_checkpoint(root)
    except FileNotFoundError as e:  # `latest` names a deleted step and none is left
        raise ConfigError(str(e)) from None


def run_result(
    status: str, state: TrainState, loss: float | None, steps_run: int, seconds: float
) -> dict[str, Any]:
    """What ``Trainer.run`` returns (and ``msplit train`` prints as JSON)."""
    return {
        "status": status,
        "step": state.step,
        "tokens": state.tokens,
        "loss": loss,  # None when no step ran
        # wall time of this invocation's steps, evaluation and checkpoints included
        "loop_seconds": seconds,
        "steps_run": steps_run,
    }


class Trainer:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)

    def run(self) -> dict[str, Any]:
        cfg = self.cfg.resolve()  # recorded resolved: the shards and vocabulary it trains on
        runtime = init_distributed(cfg.parallel.tensor, cfg.parallel.pipeline)
        cfg.validate(world_size=runtime.env.world_size)
        loop = cfg.train
        checkpointer = Checkpointer(cfg.checkpoint, self.run_dir / "checkpoints")
        latest = _latest_checkpoint(checkpointer.root) if cfg.checkpoint.resume else None
        if latest is not None:
            saved = read_meta(latest)
            check_resumable(cfg, saved, latest)
            if saved["step"] >= loop.end_step:  # a rerun of a finished run or segment
                done = TrainState(step=saved["step"], tokens=saved["tokens"])
                return run_result("already_complete", done, None, 0, 0.0)
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func

        tokenizer = dataset_tokenizer(cfg.data.paths)
        seed_everything(cfg.seed)
        ddp, gpt = build_model(cfg, runtime)
        seed_everything(cfg.seed + 1)  # training RNG streams independent of how init drew
        optimizer = cfg.optim.build(
            [ddp], cfg.model.params_dtype == "bf16", cfg.parallel.distributed_optimizer
        )
        if runtime.is_main:
            log.info("%s", cfg.model.describe())

        dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        train_data, valid_data = cfg.data.build(
            tokenizer,
            seq_length=cfg.model.seq_length,
            train_samples=loop.steps * loop.global_batch,
            valid_samples=max(loop.eval_batches, 1) * loop.global_batch,
            cache_dir=self.run_dir / "data_cache",
        )

        if runtime.is_main:
            _warn_on_repeated_data(train_data, cfg, loop.steps)
        if valid_data is not None and len(valid_data) < loop.eval_batches * loop.global_batch:
            log.warning(
                "validation set has %d samples, fewer than train.eval_batches x global_batch = "
                "%d: samples repeat within an evaluation",
                len(valid_data),
                loop.eval_batches * loop.global_batch,
            )
        state = TrainState()
        if latest is not None:
            state = checkpointer.resume(latest, gpt, optimizer)
            if runtime.is_main:
                log.info("resumed from %s (step %d)", latest, state.step)
        elif cfg.init.checkpoint is not None:
            parent = resolve_checkpoint(cfg.init.checkpoint)
            parent_meta = read_meta(parent)
            _check_same_model(cfg, parent_meta, parent)
            check_shards_tokenizer(parent_meta, cfg.data.paths, f"init.checkpoint {parent}")
            meta = checkpointer.load_weights(parent, gpt, optimizer, cfg.init.load_optimizer)
            state.lineage = {
                **_parent_record(parent, meta),
                "optimizer_from_parent": cfg.init.load_optimizer,
                "parent_lineage": meta.get("lineage", {}),
            }
            if runtime.is_main:
                log.info("initialised from %s (step %d)", parent, meta["step"])

        run_config = asdict(cfg)
        identity = run_identity(cfg.role.arm, cfg.role.cluster, run_config)
        metrics = MetricsSink(
            self.run_dir,
            loop.steps,
            state.step,
            enabled=runtime.is_main,
            tensorboard=loop.tensorboard,
            progress=loop.progress,
            end_step=loop.end_step,
        )
        forward_backward = get_forward_backward_func()
        forward_step = make_forward_step(runtime.device)
        micro_per_step = loop.global_batch // (loop.micro_batch * dp_size)
        tokens_per_step = loop.global_batch * cfg.model.seq_length
        flops_per_token = cfg.model.flops_per_token(cfg.parallel.tensor)
        peak = peak_flops(cfg)

        def global_batch_loss(dataset, first_sample: int, forward_only: bool) -> float:
            """Run one global batch from ``first_sample`` through the schedule; its mean loss."""
            out = forward_backward(
                forward_step_func=forward_step,
                data_iterator=step_microbatches(
                    dataset, first_sample, loop.global_batch, loop.micro_batch, dp_rank, dp_size
                ),
                model=[ddp],
                num_microbatches=micro_per_step,
                seq_length=cfg.model.seq_length,
                micro_batch_size=loop.micro_batch,
                forward_only=forward_only,
            )
            return _global_mean_loss(out, runtime.device)

        def evaluate() -> float:
            ddp.eval()
            losses = [
                global_batch_loss(valid_data, i * loop.global_batch, forward_only=True)
                for i in range(loop.eval_batches)
            ]
            ddp.train()
            return sum(losses) / len(losses)

        def save() -> None:
            parent_tokens = state.lineage.get("parent_tokens")
            coordinates = law_coordinates(cfg.role.arm, state.tokens, parent_tokens)
            # At the end of a decaying schedule: comparable with other annealed runs.
            annealed = state.step == loop.steps and cfg.optim.schedule.kind != "constant"
            checkpointer.save(
                gpt, optimizer, state, run_config,
                {**identity, **coordinates, "annealed": annealed},
            )  # fmt: skip

        preemption = PreemptionFlag()
        status = "completed" if loop.end_step == loop.steps else "stopped_at_step"
        last_saved = state.step if latest is not None else -1
        throughput = Throughput()
        loss: float | None = None
        ddp.train()
        loop_start, start_step = time.perf_counter(), state.step
        if valid_data is not None and loop.eval_at_start and state.step == 0:
            metrics.write({"step": 0, "val_loss": evaluate()})
        try:
            while state.step < loop.end_step:
                with throughput.step(tokens_per_step):  # tokens/s counts training time only
                    lr = cfg.optim.apply(optimizer, state.step, loop.steps)
                    ddp.zero_grad_buffer()
                    optimizer.zero_grad()
                    loss = global_batch_loss(train_data, state.consumed_samples, forward_only=False)
                    _, grad_norm, _ = optimizer.step()
                state.step += 1
                state.consumed_samples += loop.global_batch
                state.tokens += tokens_per_step
                metrics.advance({"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"})

                last = state.step == loop.steps
                if state.step % loop.log_every == 0 or state.step == loop.end_step:
                    tokens_per_s = throughput.take()
                    record = {
                        "step": state.step,
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens": state.tokens,
                        "flops": state.tokens * flops_per_token,
                        "tokens_per_s": tokens_per_s,
                    }
                    if peak:
                        record["mfu"] = (
                            tokens_per_s * flops_per_token / (peak * runtime.env.world_size)
                        )
                    metrics.write(record)
                if (
                    valid_data is not None
                    and loop.eval_every
                    and (state.step % loop.eval_every == 0 or last)
                ):
                    metrics.write({"step": state.step, "val_loss": evaluate()})
                checkpointer.poll()  # publishes a background write once it has finished
                if cfg.checkpoint.saves_at(state.step):
                    save()
                    last_saved = state.step
                if preemption.agreed():
                    status = preemption.status
                    break
            # A run stopped by a signal and a finished segment are resumed from where they stop.
            stopped = status != "completed"
            if last_saved != state.step and (stopped or cfg.checkpoint.save_at_end):
                save()
            checkpointer.wait()  # nothing is left half-written when the run returns
        finally:
            preemption.restore()
            metrics.close()
        if status == "preempted":
            preemption.forward()  # e.g. submitit requeues the job from here
        seconds = time.perf_counter() - loop_start
        return run_result(status, state, loss, state.step - start_step, seconds)
