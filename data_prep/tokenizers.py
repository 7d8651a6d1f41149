"""One tokenizer interface over HF `tokenizers` JSON, GPT-2 BPE files and SentencePiece.

A tokenizer is named by a *spec*: a string such as ``hf:PATH/tokenizer.json``,
``gpt2:VOCAB.json,MERGES.txt`` (or ``gpt2:DIR`` holding ``encoder.json``/``vocab.json`` and
``vocab.bpe``/``merges.txt``), ``sentencepiece:PATH.model``, or the equivalent dict
``{"kind": ..., "path": ..., "merges": ..., "eod": ...}``. ``Tokenizer.spec`` is that dict
with absolute paths and the end-of-document token resolved, so writing it into a shard
manifest and passing it back to :func:`load_tokenizer` reloads the same tokenizer.

Two things keep encoding fast and its memory bounded without changing a single id:
- OpenAI's GPT-2 vocabulary (recognised by content, whatever files hold it) encodes through
  tiktoken, whose BPE gives GPT-2's ids several times faster than HF tokenizers;
- a long text under GPT-2's pre-tokenizer is encoded in pieces cut where that pre-tokenizer
  always ends a pre-token (see :func:`whitespace_pieces`), so memory follows the piece, not
  the document.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# End-of-document candidates tried in order when a spec names none.
EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
GPT2_EOD = "<|endoftext|>"
KINDS = ("hf", "gpt2", "sentencepiece")
# Characters per piece when a long text is encoded in pieces.
PIECE_CHARS = 1 << 20
# GPT-2's pre-tokenizer (HF's ByteLevel regex; tiktoken's r50k pattern spells it this way).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# sha256 of OpenAI's GPT-2 BPE ranks (each token's bytes, length-prefixed, in id order).
GPT2_RANKS_SHA256 = "3b27ee95684e28911415c6bcd8537b0d5b950f05a84053d4e6c63a26990f9617"
# Cut before a space or newline that follows a non-whitespace character. No GPT-2 pre-token
# runs from a non-space character into whitespace, and matches only look ahead, so the
# pieces pre-tokenize, and encode, exactly as the whole text does. (Python's \S is narrower
# than the regex's, so a cut it allows the tokenizer allows too.)
_PIECE_CUT = re.compile(r"\S(?=[ \n])")


class TokenizerError(ValueError):
    """A tokenizer spec that cannot be loaded, with the reason."""


class Tokenizer(ABC):
    """Text <-> token ids, plus the two numbers a shard needs: vocab size and EOD id."""

    spec: dict[str, Any]
    vocab_size: int
    eod_id: int
    # Whether encoding releases the GIL for the whole call, so that threads of one process
    # encode in parallel; otherwise parallel encoding needs processes.
    encodes_in_threads: bool = False
    encoder: str  # the library that encodes: "tokenizers", "tiktoken" or "sentencepiece"

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """:meth:`encode_batch` as one integer array per text (what shard writers append)."""
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids."""

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of an evaluation prompt, in which the strings of the tokenizer's special
        tokens (a chat template's turn markers) are those tokens, as transformers and
        lm-evaluation-harness read them; in a document (:meth:`encode`) they are text."""
        return self.encode(text)

    def token_dtype(self) -> type[np.integer]:
        """The smallest index dtype that holds every id (as Megatron's shards use)."""
        return np.uint16 if self.vocab_size < 65536 else np.int32


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (also used for GPT-2 vocab + merges files)."""

    encodes_in_threads = True
    encoder = "tokenizers"

    def __init__(self, tokenizer: Any, spec: dict[str, Any]):
        # Special-token strings inside a document are text: a document must not be able to
        # end itself (or the next one) by containing "<|endoftext|>".
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        eod = spec.get("eod") or _first_present(tokenizer, EOD_CANDIDATES)
        if eod is None or tokenizer.token_to_id(eod) is None:
            raise TokenizerError(
                f"tokenizer {spec['path']} has no end-of-document token "
                f"(tried {eod or ', '.join(EOD_CANDIDATES)}); name one with the spec's 'eod'"
            )
        self.spec = {**spec, "eod": eod}
        self.eod_id = int(tokenizer.token_to_id(eod))
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.gpt2_pre_tokenizer = _has_gpt2_pre_tokenizer(tokenizer)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not self.gpt2_pre_tokenizer or max(map(len, texts), default=0) <= PIECE_CHARS:
            return self._encode(texts)
        pieces = [whitespace_pieces(text) for text in texts]
        encoded = iter(self._encode([piece for split in pieces for piece in split]))
        return [[i for _ in split for i in next(encoded)] for split in pieces]

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_prompt(self, text: str) -> list[int]:
        self._tokenizer.encode_special_tokens = False
        try:
            return self._tokenizer.encode(text, add_special_tokens=False).ids
        finally:
            self._tokenizer.encode_special_tokens = True

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        """This tokenizer as one HF ``tokenizer.json`` (what transformers loads)."""
        self._tokenizer.save(str(path))


class GPT2Tokenizer(HFTokenizer):
    """GPT-2 BPE files. With OpenAI's GPT-2 vocabulary in them (and its end-of-text token
    last), encoding goes through tiktoken (the same ids), and HF tokenizers, which decodes
    and saves, loads only when that is asked; any other vocabulary in GPT-2's file format
    is an HF tokenizer throughout."""

    def __init__(self, spec: dict[str, Any]):
        try:
            vocab = orjson.loads(Path(spec["path"]).read_bytes())  # UTF-8 checked too
        except orjson.JSONDecodeError as error:
            raise TokenizerError(f"{spec['path']}: not a GPT-2 vocabulary: {error}") from None
        if not isinstance(vocab, dict):
            raise TokenizerError(f"{spec['path']}: not a GPT-2 vocabulary (token -> id object)")
        eod_id = vocab.get(spec["eod"])
        self._tiktoken = _gpt2_tiktoken(vocab, eod_id) if eod_id == len(vocab) - 1 else None
        if self._tiktoken is None:
            super().__init__(_gpt2_tokenizer(spec["path"], spec["merges"]), spec)
            return
        self.spec, self.eod_id, self.vocab_size = spec, eod_id, len(vocab)
        self.gpt2_pre_tokenizer = True
        self.encoder = "tiktoken"
        # tiktoken holds the GIL for part of each call: parallel encoding takes processes.
        self.encodes_in_threads = False

    @functools.cached_property
    def _tokenizer(self) -> Any:  # the tiktoken case's, when first asked for (0.1 s)
        tokenizer = _gpt2_tokenizer(self.spec["path"], self.spec["merges"])
        tokenizer.encode_special_tokens = True  # as HFTokenizer sets it
        return tokenizer

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._tiktoken is None:
            return super().encode_batch(texts)
        return [ids.tolist() for ids in self.encode_arrays(texts)]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        if self._tiktoken is None:
            return super().encode_arrays(texts)
        return [self._tiktoken_ids(text) for text in texts]

    def _tiktoken_ids(self, text: str) -> np.ndarray:
        # No special token allowed and none refused: special-token strings are text.
        ids = [self._tiktoken.encode_to_numpy(piece, disallowed_special=())
               for piece in whitespace_pieces(text)]  # fmt: skip
        return ids[0] if len(ids) == 1 else np.concatenate(ids)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (``.model``); EOD is its ``</s>`` (eos) piece."""

    encoder = "sentencepiece"

    def __init__(self, spec: dict[str, Any]):
        import sentencepiece

        try:
            self._model = sentencepiece.SentencePieceProcessor(model_file=spec["path"])
        except RuntimeError as error:
            raise TokenizerError(
                f"{spec['path']}: not a SentencePiece model (.model): {error}"
            ) from None
        eod = spec.get("eod")
        eod_id = self._model.piece_to_id(eod) if eod else self._model.eos_id()
        if eod_id < 0 or (eod and self._model.id_to_piece(eod_id) != eod):
            raise TokenizerError(f"sentencepiece model {spec['path']} has no EOD piece {eod!r}")
        self.spec = {**spec, "eod": self._model.id_to_piece(eod_id)}
        self.eod_id = int(eod_id)
        self.vocab_size = int(self._model.get_piece_size())

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._model.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self._model.decode([int(i) for i in ids])


def parse_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """Normalise a spec string or dict into a dict with absolute, existing paths."""
    if isinstance(spec, str):
        kind, sep, rest = spec.partition(":")
        if not sep or kind not in KINDS:
            raise TokenizerError(
                f"tokenizer spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)}"
            )
        parts = rest.split(",")
        spec = {"kind": kind, "path": parts[0]}
        if len(parts) > 1:
            spec["merges"] = parts[1]
    spec = dict(spec)
    kind = spec.get("kind")
    if kind not in KINDS or not spec.get("path"):
        raise TokenizerError(f"tokenizer spec {spec!r} needs 'kind' in {KINDS} and a 'path'")
    path = Path(spec["path"]).expanduser().resolve()
    if kind == "hf" and path.is_dir():  # a model directory: its tokenizer and its EOS
        spec.setdefault("eod", _model_eos(path))
        path = path / "tokenizer.json"
    if kind == "gpt2":
        vocab, merges = _gpt2_files(path, spec.get("merges"))
        spec["path"], spec["merges"] = str(vocab), str(merges)
    else:
        spec["path"] = str(path)
    for key in ("path", "merges"):
        if key in spec and not Path(spec[key]).is_file():
            raise TokenizerError(f"tokenizer spec: {spec[key]} is not a file")
    return spec


def _model_eos(directory: Path) -> str | None:
    """The EOS token a Hugging Face model directory's ``tokenizer_config.json`` names."""
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
    return eos.get("content") if isinstance(eos, dict) else eos  # older files: an AddedToken


def load_tokenizer(spec: str | dict[str, Any]) -> Tokenizer:
    """Load the tokenizer a spec names (see the module docstring for spec forms)."""
    spec = parse_spec(spec)
    if spec["kind"] == "sentencepiece":
        return SentencePieceTokenizer(spec)
    from tokenizers import Tokenizer as RustTokenizer

    if spec["kind"] == "hf":
        try:
            tokenizer = RustTokenizer.from_file(spec["path"])
        except Exception as error:  # tokenizers raises a bare Exception for a bad file
            raise TokenizerError(
                f"{spec['path']}: not a Hugging Face tokenizer.json: {error}"
            ) from None
        return HFTokenizer(tokenizer, spec)
    return GPT2Tokenizer({"eod": GPT2_EOD, **spec})


def tokenizer_identity(spec: dict[str, Any]) -> tuple:
    """What makes a spec's tokenizer the tokenizer it is, wherever its files are: equal for
    two specs of the same kind, end-of-document token and contents (a ``tokenizer.json``
    as HF tokenizers reads it, so a copy transformers re-saved is the same tokenizer)."""
    files = [Path(spec[key]) for key in ("path", "merges") if spec.get(key)]
    if any(not f.is_file() for f in files):
        return spec.get("kind"), spec.get("eod"), *map(str, files)
    if spec.get("kind") == "hf":
        from tokenizers import Tokenizer as RustTokenizer

        # Documents are encoded without special tokens, so the post-processor (which
        # transformers adds on saving), padding and truncation change no id here.
        decides = json.loads(RustTokenizer.from_file(str(files[0])).to_str())
        for key in ("post_processor", "padding", "truncation"):
            decides.pop(key, None)
        contents = [json.dumps(decides, sort_keys=True).encode()]
    else:
        contents = [f.read_bytes() for f in files]
    return spec.get("kind"), spec.get("eod"), *(hashlib.sha256(c).hexdigest() for c in contents)


def whitespace_pieces(text: str, size: int | None = None) -> list[str]:
    """`text` in pieces of at least `size` characters (but the last), each cut before a
    space or newline that follows a non-whitespace character: under GPT-2's pre-tokenizer
    the pieces encode to the ids of the whole. A stretch without such a place stays whole."""
    size = size or PIECE_CHARS
    pieces, start = [], 0
    while len(text) - start > size and (cut := _PIECE_CUT.search(text, start + size - 1)):
        pieces.append(text[start : cut.end()])
        start = cut.end()
    pieces.append(text[start:])
    return pieces


def _has_gpt2_pre_tokenizer(tokenizer: Any) -> bool:
    """Byte-level pre-tokenization with GPT-2's regex, no prefix space and no normalizer:
    the pre-tokenizer under which :func:`whitespace_pieces` changes no id."""
    from tokenizers import pre_tokenizers

    pre = tokenizer.pre_tokenizer
    return (tokenizer.normalizer is None and isinstance(pre, pre_tokenizers.ByteLevel)
            and pre.use_regex and not pre.add_prefix_space)  # fmt: skip


def _byte_level_bytes() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (how such vocabularies write
    tokens) -> the byte: printable Latin-1 bytes stand for themselves, the others for
    256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(others)}


def _gpt2_tiktoken(vocab: dict[str, int], eod_id: int) -> Any | None:
    """A tiktoken encoding of a GPT-2 vocabulary (token -> id, with the end-of-text token
    at `eod_id`) when its other tokens are OpenAI's GPT-2 ranks."""
    tokens = [token for token, i in vocab.items() if i != eod_id]
    # Every token's bytes at once: each stand-in becomes its byte's Latin-1 character. A
    # character outside the alphabet fails to encode, or fails the digest below.
    table = {ord(c): b for c, b in _byte_level_bytes().items()}
    try:
        joined = "".join(tokens).translate(table).encode("latin-1")
    except (UnicodeEncodeError, TypeError):
        return None
    ends = itertools.accumulate(map(len, tokens))  # a character a byte
    ranks = {joined[end - len(t) : end]: vocab[t] for t, end in zip(tokens, ends, strict=True)}
    digest = hashlib.sha256()
    for token in sorted(ranks, key=ranks.__getitem__):
        digest.update(len(token).to_bytes(2, "little") + token)
    if digest.hexdigest() != GPT2_RANKS_SHA256:
        return None
    import tiktoken

    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={GPT2_EOD: eod_id})  # fmt: skip


def _gpt2_files(path: Path, merges: str | None) -> tuple[Path, Path]:
    if merges:
        return path, Path(merges).expanduser().resolve()
    if not path.is_dir():
        raise TokenizerError(f"gpt2 spec {path}: give VOCAB.json,MERGES.txt or a directory")
    vocab = next((path / n for n in ("vocab.json", "encoder.json") if (path / n).is_file()), None)
    merge = next((path / n for n in ("merges.txt", "vocab.bpe") if (path / n).is_file()), None)
    if vocab is None or merge is None:
        raise TokenizerError(
            f"gpt2 spec {path}: directory needs vocab.json|encoder.json and merges.txt|vocab.bpe"
        )
    return vocab, merge


def _gpt2_tokenizer(vocab: str, merges: str) -> Any:
    """GPT-2's byte-level BPE from its two files; ids equal OpenAI's encoder."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE.from_file(vocab, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(GPT2_EOD, special=True)])
    return tokenizer


def _first_present(tokenizer: Any, candidates: Sequence[str]) -> str | None:
    return next((t for t in candidates if tokenizer.token_to_id(t) is not None), None)


def megatron_tokenizer(
    tokenizer: Tokenizer | None = None, *, vocab_size: int | None = None, eod_id: int | None = None
) -> Any:
    """The `megatron.core.tokenizers` object GPTDatasetConfig expects.

    Give a loaded :class:`Tokenizer`, or just ``vocab_size`` and ``eod_id`` (from a shard
    manifest) when no tokenizer files are at hand: datasets only read those two numbers.
    """
    from data_prep.megatron_tokenizer import ShardTokenizer  # imports torch: load lazily

    if tokenizer is not None:
        vocab_size, eod_id = tokenizer.vocab_size, tokenizer.eod_id
    if vocab_size is None or eod_id is None:
        raise ValueError("megatron_tokenizer needs a tokenizer or both vocab_size and eod_id")
    return ShardTokenizer(tokenizer, int(vocab_size), int(eod_id))
