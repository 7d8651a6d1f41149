"""Self-attention whose static KV cache holds keys already rotated.

megatron.core's static-batching cache stores keys before the rotary embedding and rotates
all of them, at every position so far, again at every decoding step: a cost that grows with
the cached length. A key's rotation depends only on its own position, so this layer
rotates each key once, as it enters the cache (what megatron's dynamic-batching path
already does), and leaves only the query to rotate afterwards. Same numbers, computed once.
Training and passes without a cache are megatron's own code path. The cache is laid out
for attention to read it (``_allocate_memory``).

Keys held rotated also let a batch read a prefix its rows share once: ``share_cached_prefix``
gives every row the prefix one row read, its keys rotated on to where that row needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.attention import (
    SelfAttention,
    _yarn_get_concentration_factor_from_config,
)


class RotatedKeyCacheAttention(SelfAttention):
    def _allocate_memory(self, inference_max_sequence_length, batch_size, dim, dtype):
        """The static cache, indexed [S, B, G, D] as megatron indexes it; for SDPA, over
        memory laid out [B, G, S, D], so that it reads each head's keys and values as one
        block, not B x G entries apart. Zeros: a position no pass wrote (between a shared
        prefix and a short row) is masked, and must not hold a NaN for the mask to multiply
        by zero."""
        from megatron_split.model.sdpa import SDPAttention

        shape_SBGD = (inference_max_sequence_length, batch_size,
                      self.num_query_groups_per_partition, dim)  # fmt: skip
        order = (1, 2, 0, 3) if isinstance(self.core_attention, SDPAttention) else (0, 1, 2, 3)
        memory = torch.zeros([shape_SBGD[i] for i in order], dtype=dtype,
                             device=torch.cuda.current_device())  # fmt: skip
        return memory.permute([order.index(i) for i in range(4)])  # back to [S, B, G, D]

    def _adjust_key_value_for_inference(
        self, inference_context, query, key, value, rotary_pos_emb, *args, **kwargs
    ):
        if (
            inference_context is None
            or not inference_context.is_static_batching()
            or rotary_pos_emb is None
            or self.config.flash_decode  # rotates keys before caching itself
        ):
            return super()._adjust_key_value_for_inference(
                inference_context, query, key, value, rotary_pos_emb, *args, **kwargs
            )
        _, k_pos_emb_S11D = rotary_pos_emb  # every position the cache can hold
        start = inference_context.sequence_len_offset
        key = apply_rotary_pos_emb(
            key,
            k_pos_emb_S11D[start : start + key.shape[0]],
            config=self.config,
            mscale=_yarn_get_concentration_factor_from_config(self.config),
            cp_group=self.pg_collection.cp,
        )
        query, key, value, (q_pos_emb, _), mask_type, block_table = (
            super()._adjust_key_value_for_inference(
                inference_context, query, key, value, rotary_pos_emb, *args, **kwargs
            )
        )
        return query, key, value, (q_pos_emb, None), mask_type, block_table


def share_cached_prefix(
    model: Any, cache: Any, length: int, shifts_B: Sequence[int] | None = None
) -> None:
    """Give every row of a static KV cache the first ``length`` positions that row 0 read,
    as row b would have read them ``shifts_B[b]`` positions further on (none by default).

    Cached values and, before their rotation, keys depend on positions only through the
    differences the prefix holds within itself; a key cached rotated at position p, rotated
    on by s, is the key rotated at p + s (rotations by angles proportional to the position
    compose). So values are copied and keys rotated on, and each row reads as though it had
    read the prefix itself (up to float rounding), wherever its own tokens sit.
    """
    from megatron.core.utils import get_attr_wrapped_model

    gpt = get_attr_wrapped_model(model, "decoder", return_model_obj=True)
    rotary = getattr(gpt, "rotary_pos_emb", None)  # None: learned positions
    shifted = rotary is not None and shifts_B is not None and any(shifts_B)
    if shifted:
        decoder = gpt.decoder
        if not all(isinstance(layer.self_attention, RotatedKeyCacheAttention)
                   for layer in decoder.layers):  # fmt: skip
            raise ValueError("shifting a cached prefix needs keys cached rotated")
        emb_S11D = rotary(max(shifts_B) + 1)  # the rotation angles of each position
        freqs_1B1D = emb_S11D[list(shifts_B)].transpose(0, 1)
    for key_SBGD, value_SBGD in cache.key_value_memory_dict.values():
        value_SBGD[:length, 1:] = value_SBGD[:length, :1]
        if shifted:
            batch = len(shifts_B)
            key_P1GD = key_SBGD[:length, :1].clone()
            key_SBGD[:length, :batch] = apply_rotary_pos_emb(
                key_P1GD.expand(-1, batch, -1, -1),
                freqs_1B1D,
                config=decoder.config,
                mscale=1.0,  # a pure rotation: any scale came with the first one
            )
        else:
            key_SBGD[:length, 1:] = key_SBGD[:length, :1]
