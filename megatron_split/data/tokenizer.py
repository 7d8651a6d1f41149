"""The tokenizer as megatron.core's GPTDataset sees it: sizes and special ids, nothing more."""

from __future__ import annotations

from megatron.core.tokenizers import MegatronTokenizerBase


class _DatasetTokenizer(MegatronTokenizerBase):
    """What GPTDataset reads of a tokenizer: vocab size, EOD and pad ids. It never encodes."""

    def __init__(self, vocab_size: int, eod_id: int):
        super().__init__(path="", config={"library": "megatron-split"})
        self._vocab_size, self.eod, self.pad = vocab_size, eod_id, -1
        # Part of the dataset cache key: a different vocabulary never reuses cached indices.
        self.unique_identifiers = {
            "class": "DatasetTokenizer",
            "vocab_size": vocab_size,
            "eod": eod_id,
        }

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def vocab(self):
        raise NotImplementedError("training reads token ids; it never needs the vocabulary")

    def tokenize(self, text):
        raise NotImplementedError("training reads token ids; tokenize with `msplit data tokenize`")

    def detokenize(self, ids):
        raise NotImplementedError("training reads token ids; it never detokenizes")

    def apply_chat_template(self, *args, **kwargs):
        raise NotImplementedError


def dataset_tokenizer(vocab_size: int, eod_id: int) -> MegatronTokenizerBase:
    return _DatasetTokenizer(vocab_size, eod_id)
