"""Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

A drop-in for megatron.core's ``DotProductAttention`` in a layer spec: fused flash / memory-
efficient kernels on GPUs without Transformer Engine, and a faster path on CPU than the
unfused baddbmm + softmax of the local spec. Same interface, same tensor layouts.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPAttention(MegatronModule):
    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism")
        tp = config.tensor_model_parallel_size
        head_dim = config.kv_channels
        self.heads_per_partition = divide(config.num_attention_heads, tp)
        self.groups_per_partition = divide(config.num_query_groups, tp)
        self.hidden_per_partition = head_dim * self.heads_per_partition
        self.attn_mask_type = attn_mask_type
        self.softmax_scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
        self.dropout_p = (
            config.attention_dropout if attention_dropout is None else attention_dropout
        )

    def forward(
        self,
        query,
        key,
        value,
        attention_mask,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention supports neither packed sequences nor bias")
        # megatron: [s, b, heads, head_dim]; SDPA: [b, heads, s, head_dim]
        q_BHSD, k_BGSD, v_BGSD = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        # A mask given is the whole mask (as in megatron's unfused softmax), so a padded
        # batch can say which keys each row reads; without one the mask type decides.
        # megatron masks are True where attention is NOT allowed; SDPA wants the opposite.
        mask = None if attention_mask is None else ~attention_mask
        causal = mask is None and (attn_mask_type or self.attn_mask_type) == AttnMaskType.causal
        s, b = query.shape[0], query.shape[1]
        grouped = self.groups_per_partition != self.heads_per_partition
        if s == 1 and grouped and not self.training and (mask is None or mask.shape[1] == 1):
            # One query position (a decoding step): the heads of a group read the same keys
            # under the same mask, so they go where SDPA's sequence is, one head per group,
            # and no key or value is broadcast to every head.
            q_BGRD = q_BHSD.reshape(b, self.groups_per_partition, -1, q_BHSD.shape[-1])
            out_BGRD = F.scaled_dot_product_attention(
                q_BGRD, k_BGSD, v_BGSD, attn_mask=mask, scale=self.softmax_scale
            )
            return out_BGRD.reshape(s, b, self.hidden_per_partition)
        dropout_p = self.dropout_p if self.training else 0.0
        with tensor_parallel.get_cuda_rng_tracker().fork():
            out_BHSD = F.scaled_dot_product_attention(
                q_BHSD,
                k_BGSD,
                v_BGSD,
                attn_mask=mask,
                dropout_p=dropout_p,
                is_causal=causal,
                scale=self.softmax_scale,
                enable_gqa=grouped,
            )
        return out_BHSD.permute(2, 0, 1, 3).reshape(s, b, self.hidden_per_partition)
