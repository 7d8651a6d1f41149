"""A trained run's model for scoring and export, from its native checkpoint.

Rebuilds the GPT from the config saved in the checkpoint and loads its weights at the
layout asked for, whatever TP/PP layout saved them (dist_checkpointing reshards): one
device by default, or tensor and pipeline parallel ranks under torchrun for a model larger
than one device. ``forward_stages`` runs a forward pass through the pipeline's stages and
``from_last_stage`` hands what the last stage computed to every rank, so that scoring code
reads the same on one device and on many.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from megatron_split.train.config import RunConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    module: Any  # what to call (the GPTModel, wrapped for bf16 when it trained in bf16)
    gpt: Any  # the megatron.core GPTModel inside it (this rank's chunk)
    config: RunConfig  # the run's config, as saved
    meta: dict[str, Any]  # the checkpoint's step, tokens, lineage
    path: Path  # the checkpoint directory


def load_trained_model(path: str | Path, tensor: int = 1, pipeline: int = 1) -> TrainedModel:
    """The model of checkpoint ``path`` (a step, checkpoints/ or run directory), in eval mode,
    split over ``tensor`` x ``pipeline`` ranks (the processes beyond them hold replicas)."""
    from megatron.core import parallel_state as ps

    from megatron_split.checkpoint import Checkpointer, read_meta, resolve_checkpoint
    from megatron_split.config import ConfigError, from_dict
    from megatron_split.runtime import init_distributed, seed_everything
    from megatron_split.train.loop import build_bare_model

    checkpoint = resolve_checkpoint(path)
    meta = read_meta(checkpoint)
    cfg = from_dict(RunConfig, meta["config"], where=f"{checkpoint}: config")
    runtime = init_distributed(tensor, pipeline)
    layout = (ps.get_tensor_model_parallel_world_size(),
              ps.get_pipeline_model_parallel_world_size())  # fmt: skip
    if layout != (tensor, pipeline):
        raise ConfigError(f"this process already runs at TP={layout[0]}, PP={layout[1]}; "
                          f"cannot load {checkpoint} at TP={tensor}, PP={pipeline}")  # fmt: skip
    cfg.parallel.tensor, cfg.parallel.pipeline = tensor, pipeline
    seed_everything(cfg.seed)
    module, gpt = build_bare_model(cfg, runtime.device)
    Checkpointer(cfg.checkpoint, checkpoint.parent).load_weights(
        checkpoint, gpt, None, load_optimizer=False
    )
    module.eval()
    if (tensor, pipeline) != (1, 1):
        log.info("%s at TP=%d, PP=%d: rank %d holds %d of its %d parameters", checkpoint, tensor,
                 pipeline, runtime.env.rank, sum(p.numel() for p in gpt.parameters()),
                 cfg.model.parameter_counts()["total"])  # fmt: skip
    return TrainedModel(module, gpt, cfg, meta, checkpoint)


@torch.no_grad()
def forward_stages(
    module: Any, tokens_BS: torch.Tensor, position_ids_BS: torch.Tensor, **kwargs: Any
) -> Any:
    """The model's output (logits, or the loss given ``labels``) on the pipeline's last
    stage, None on the others. Each later stage reads the hidden states of the one before
    it; at TP the logits are gathered over the vocabulary (``runtime_gather_output``)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() == 1:
        return module(tokens_BS, position_ids_BS, None, **kwargs)
    if not ps.is_pipeline_first_stage():
        batch, seq = tokens_BS.shape
        config = module.config
        hidden_SBH = torch.empty(seq, batch, config.hidden_size, dtype=config.params_dtype,
                                 device=tokens_BS.device)  # fmt: skip
        dist.recv(hidden_SBH, src=ps.get_pipeline_model_parallel_prev_rank())
        module.set_input_tensor(hidden_SBH)
    output = module(tokens_BS, position_ids_BS, None, **kwargs)
    if ps.is_pipeline_last_stage():
        return output
    dist.send(output.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
    return None


@contextmanager
def output_positions(module: Any, positions: slice | torch.Tensor) -> Iterator[None]:
    """Within, the model's output layer reads only the hidden states at sequence
    ``positions``: a slice, the same in every row, or a (B, P) tensor of each row's own
    positions; its logits are (B, P, V). A scoring batch scores a few positions of each row,
    not at the same place in rows of different lengths; at a large vocabulary the output
    layer at all the others would be a fifth of the forward pass thrown away. Nothing
    changes on earlier pipeline stages."""
    from megatron.core.utils import get_attr_wrapped_model

    gpt = get_attr_wrapped_model(module, "post_process", return_model_obj=True)
    if not gpt.post_process:
        yield
        return

    def keep_positions(_layer: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden_SBH, *rest = args
        if isinstance(positions, slice):
            return (hidden_SBH[positions], *rest), kwargs
        rows_1B = torch.arange(hidden_SBH.shape[1], device=hidden_SBH.device)[None]
        return (hidden_SBH[positions.T.to(hidden_SBH.device), rows_1B], *rest), kwargs

    handle = gpt.output_layer.register_forward_pre_hook(keep_positions, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def from_last_stage(value: T) -> T:
    """``value`` as the pipeline's last stage holds it, on every stage (itself with one)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=ps.get_pipeline_model_parallel_last_rank(),
                               group=ps.get_pipeline_model_parallel_group())  # fmt: skip
    return shared[0]
