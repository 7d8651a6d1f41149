from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.tokenizers import TokenizerError, load_tokenizer, megatron_tokenizer, parse_spec


def test_trained_bpe_round_trips_and_has_eod(bpe_spec: str) -> None:
    tokenizer = load_tokenizer(bpe_spec)
    text = "Mr. Smith met Dr. Jones: naïve café 東京 😀"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.eod_id == 0  # the trainer's only special token comes first
    assert tokenizer.encode_batch([text, "court"]) == [ids, tokenizer.encode("court")]
    assert max(ids) < tokenizer.vocab_size
    assert tokenizer.token_dtype() is np.uint16


def test_spec_reloads_the_same_tokenizer(bpe_spec: str) -> None:
    tokenizer = load_tokenizer(bpe_spec)
    again = load_tokenizer(json.loads(json.dumps(tokenizer.spec)))
    assert again.spec == tokenizer.spec
    assert again.encode("the court held") == tokenizer.encode("the court held")


def test_hf_spec_accepts_a_directory(bpe_spec: str) -> None:
    directory = Path(bpe_spec.removeprefix("hf:")).parent
    assert load_tokenizer(f"hf:{directory}").spec == load_tokenizer(bpe_spec).spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bpe:/x", "KIND:PATH"),
        ("no-colon", "KIND:PATH"),
        ("hf:/does/not/exist.json", "is not a file"),
        ({"kind": "sentencepiece"}, "needs 'kind'"),
    ],
)
def test_bad_specs_say_why(spec: str | dict, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        parse_spec(spec)


def test_missing_eod_token_is_an_error(bpe_spec: str) -> None:
    path = bpe_spec.removeprefix("hf:")
    with pytest.raises(TokenizerError, match="no end-of-document token"):
        load_tokenizer({"kind": "hf", "path": path, "eod": "<nope>"})


def test_gpt2_files_give_openai_ids(gpt2_dir: Path) -> None:
    tokenizer = load_tokenizer(f"gpt2:{gpt2_dir}")
    assert (tokenizer.vocab_size, tokenizer.eod_id) == (50257, 50256)
    # Reference ids of OpenAI's GPT-2 encoder.
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.encode(" The quick brown fox") == [383, 2068, 7586, 21831]
    assert tokenizer.eod_id not in tokenizer.encode("a <|endoftext|> inside a document")
    by_files = load_tokenizer(f"gpt2:{gpt2_dir / 'encoder.json'},{gpt2_dir / 'vocab.bpe'}")
    assert by_files.spec == tokenizer.spec


def test_sentencepiece_model(sentencepiece_model: Path) -> None:
    tokenizer = load_tokenizer(f"sentencepiece:{sentencepiece_model}")
    assert tokenizer.vocab_size == 32000
    assert tokenizer.spec["eod"] == "</s>" and tokenizer.eod_id == 2
    text = "The court held that the contract was void."
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_megatron_tokenizer_adapter(bpe_spec: str) -> None:
    from megatron.core.tokenizers import MegatronTokenizerBase

    tokenizer = load_tokenizer(bpe_spec)
    adapter = megatron_tokenizer(tokenizer)
    assert isinstance(adapter, MegatronTokenizerBase)
    assert (adapter.vocab_size, adapter.eod) == (tokenizer.vocab_size, tokenizer.eod_id)
    assert adapter.detokenize(adapter.tokenize("the court")) == "the court"
    ids_only = megatron_tokenizer(vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eod_id)
    assert ids_only.unique_identifiers == adapter.unique_identifiers
    with pytest.raises(RuntimeError, match="cannot encode"):
        ids_only.tokenize("x")
