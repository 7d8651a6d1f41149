"""Self-attention whose static KV cache holds keys already rotated.

megatron.core's static-batching cache stores keys before the rotary embedding and rotates
all of them, at every position so far, again at every decoding step: a cost that grows with
the cached length. A key's rotation depends only on its own position, so this layer
rotates each key once, as it enters the cache (what megatron's dynamic-batching path
already does), and leaves only the query to rotate afterwards. Same numbers, computed once.
Training and passes without a cache are megatron's own code path.
"""

from __future__ import annotations

from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.attention import (
    SelfAttention,
    _yarn_get_concentration_factor_from_config,
)


class RotatedKeyCacheAttention(SelfAttention):
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
