"""A `megatron.core.tokenizers` tokenizer over a data_prep tokenizer, for megatron datasets."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from megatron.core.tokenizers import MegatronTokenizerBase

from data_prep.tokenizers import Tokenizer


class ShardTokenizer(MegatronTokenizerBase):
    """What GPTDatasetConfig reads (vocab size, EOD), plus text round trips when loaded."""

    def __init__(self, inner: Tokenizer | None, vocab_size: int, eod_id: int):
        spec = inner.spec if inner is not None else {"kind": "ids-only", "path": ""}
        super().__init__(spec["path"], {"library": spec["kind"]})
        self._inner, self._vocab_size, self._eod_id = inner, vocab_size, eod_id

    def tokenize(self, text: str) -> list[int]:
        return self._require_inner().encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self._require_inner().decode(ids)

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("shard tokenizers have no chat template")

    def _require_inner(self) -> Tokenizer:
        if self._inner is None:
            raise RuntimeError("built from vocab_size and eod_id only: it cannot encode text")
        return self._inner

    @property
    def vocab(self) -> dict[str, int]:
        raise NotImplementedError("datasets never list the vocabulary")

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod(self) -> int:
        return self._eod_id

    @property
    def pad(self) -> int:
        # Pretraining shards hold no padding: an id that never occurs masks no real token's
        # loss (pad == EOD would make megatron warn and fall back to this anyway).
        return -1

    @property
    def unique_identifiers(self) -> OrderedDict:
        # Part of megatron's dataset cache key: equal ids share cached sample indices.
        return OrderedDict(
            [
                ("class", type(self).__qualname__),
                ("vocab_size", self._vocab_size),
                ("eod", self._eod_id),
            ]
        )
