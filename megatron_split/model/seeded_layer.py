"""A transformer layer whose initial weights depend only on (seed, global layer number).

megatron.core initialises layers one after the other from one RNG stream, so a pipeline
stage that builds layers 3-4 draws different numbers than a single process that built 1-2
first. Reseeding before each layer makes every parallel layout start from the same weights
(TP already does, with CPU initialisation), so TP, PP and DP runs are comparable step for
step with a single-process run, and a run can be re-laid out without changing its init.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.transformer.transformer_layer import (
    TransformerLayer,
    get_transformer_layer_offset,
)

# Keeps layer seeds clear of the data-order and dropout seeds derived from the same run seed.
_LAYER_SEED_STRIDE = 7919


class SeededTransformerLayer(TransformerLayer):
    def __init__(self, config, submodules, layer_number: int = 1, *, init_seed: int, **kwargs):
        pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        offset = get_transformer_layer_offset(config, kwargs.get("vp_stage"), pp_rank)
        torch.manual_seed(init_seed + _LAYER_SEED_STRIDE * (layer_number + offset))
        super().__init__(config, submodules, layer_number=layer_number, **kwargs)
