from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.tokenizers import (
    TokenizerError,
    load_tokenizer,
    megatron_tokenizer,
    parse_spec,
    tokenizer_identity,
    whitespace_pieces,
)


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


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("hf", "not a Hugging Face tokenizer.json"), ("sentencepiece", "not a SentencePiece model")],
)
@pytest.mark.parametrize("content", [b'{"text": "a corpus line"}\n', b"\x00\xff binary"])
def test_a_file_of_another_kind_is_named_with_what_was_expected(
    tmp_path: Path, kind: str, expected: str, content: bytes
) -> None:
    path = tmp_path / "not_a_tokenizer"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match=f"^{path}: {expected}"):
        load_tokenizer(f"{kind}:{path}")


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


# Texts where byte-level BPE implementations could part ways: control characters (kept as
# text, as Megatron-LM's tool keeps them), whitespace runs before words and at the end,
# contractions, digits, non-Latin scripts, combining marks and emoji.
TRICKY = [
    "ring\x07 the bell\x08\x08 form\x0cfeed \x1b[0m\x7f",
    "a  b   c\t\td\n\n\ne  \n  f   ",
    "It's I'LL we're they've I'd 'tis",
    "3.14159 2026-12-02 1,000,000 x²",
    "東京 naïve cafe\u0301 😀👍🏽 Привет мир",
    " leading space",
    "",
]


def _corpus_texts(tmp_path: Path, mb: float) -> list[str]:
    from data_prep.corpus import CorpusConfig

    CorpusConfig(output=str(tmp_path / "corpus"), max_mb=mb, progress=False).build().run()
    lines = (tmp_path / "corpus" / "corpus-00000.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


def test_gpt2_through_tiktoken_gives_megatrons_ids(gpt2_dir: Path, tmp_path: Path) -> None:
    """OpenAI's GPT-2 files encode through tiktoken; the ids are those of transformers'
    GPT2TokenizerFast, which Megatron-LM's preprocess_data.py calls for GPT2BPETokenizer,
    on tricky texts and on the bundled multi-domain corpus."""
    from transformers import GPT2TokenizerFast

    ours = load_tokenizer(f"gpt2:{gpt2_dir}")
    assert ours.encoder == "tiktoken" and not ours.encodes_in_threads
    megatron = GPT2TokenizerFast(str(gpt2_dir / "encoder.json"), str(gpt2_dir / "vocab.bpe"))
    texts = TRICKY + _corpus_texts(tmp_path, 2.0)
    expected = [megatron(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert ours.encode_batch(texts) == expected
    assert [a.tolist() for a in ours.encode_arrays(texts)] == expected
    # The one intended difference: transformers makes "<|endoftext|>" inside a text the EOD
    # token; here a document cannot end itself, so the string stays text.
    assert megatron("a <|endoftext|> b")["input_ids"] == [64, 220, 50256, 275]
    assert ours.encode("a <|endoftext|> b") == [64, 1279, 91, 437, 1659, 5239, 91, 29, 275]
    # An evaluation prompt reads it as transformers does (a chat template's turn markers);
    # documents still do not.
    assert ours.encode_prompt("a <|endoftext|> b") == [64, 220, 50256, 275]
    assert ours.encode("a <|endoftext|> b") == [64, 1279, 91, 437, 1659, 5239, 91, 29, 275]


def test_other_vocabularies_in_gpt2_files_encode_through_hf(bpe_spec: str, tmp_path: Path) -> None:
    from tokenizers import Tokenizer as RustTokenizer

    trained = load_tokenizer(bpe_spec)
    RustTokenizer.from_file(trained.spec["path"]).model.save(str(tmp_path))  # vocab + merges
    as_gpt2 = load_tokenizer(f"gpt2:{tmp_path}")
    assert as_gpt2.encoder == "tokenizers" and as_gpt2.encodes_in_threads
    assert as_gpt2.encode_batch(TRICKY) == trained.encode_batch(TRICKY)


def test_pieces_cut_where_gpt2_pre_tokenization_always_cuts() -> None:
    text = "word  two\n\nthree   four. Five\tsix  " * 40
    pieces = whitespace_pieces(text, 50)
    assert "".join(pieces) == text and len(pieces) > 10
    assert all(len(p) >= 50 and not p[-1].isspace() for p in pieces[:-1])
    assert all(p[0] in " \n" for p in pieces[1:])
    assert whitespace_pieces("x" * 500, 50) == ["x" * 500]  # no place to cut: whole


@pytest.mark.parametrize("kind", ["tiktoken", "hf"])
def test_a_text_longer_than_a_piece_encodes_to_the_ids_of_the_whole(
    kind: str, gpt2_dir: Path, bpe_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = load_tokenizer(f"gpt2:{gpt2_dir}" if kind == "tiktoken" else bpe_spec)
    assert tokenizer.gpt2_pre_tokenizer
    texts = [" ".join(_corpus_texts(tmp_path, 0.5)), *TRICKY]
    whole = tokenizer.encode_batch(texts)
    monkeypatch.setattr("data_prep.tokenizers.PIECE_CHARS", 97)
    assert len(whitespace_pieces(texts[0])) > 1000
    assert tokenizer.encode_batch(texts) == whole
    assert [a.tolist() for a in tokenizer.encode_arrays(texts)] == whole


def test_a_resaved_tokenizer_is_the_same_tokenizer_and_another_is_not(bpe_spec, tmp_path):
    from transformers import PreTrainedTokenizerFast

    ours = load_tokenizer(bpe_spec).spec
    saved = tmp_path / "model"  # as transformers writes a model's tokenizer, elsewhere
    PreTrainedTokenizerFast(tokenizer_file=ours["path"], eos_token=ours["eod"]).save_pretrained(
        saved
    )
    assert tokenizer_identity(ours) == tokenizer_identity(load_tokenizer(f"hf:{saved}").spec)
    assert tokenizer_identity(ours) != tokenizer_identity({**ours, "eod": "<unk>"})
    data = json.loads(Path(ours["path"]).read_text())
    data["model"]["merges"] = data["model"]["merges"][:-1]  # one merge fewer
    (tmp_path / "other.json").write_text(json.dumps(data))
    other = {**ours, "path": str(tmp_path / "other.json")}
    assert tokenizer_identity(ours) != tokenizer_identity(other)
