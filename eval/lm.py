"""A trained run's model for scoring text, loaded from its native checkpoint (no conversion).

``CheckpointLM.load(PATH)`` takes a step directory, a ``checkpoints/`` root or a run
directory, rebuilds the GPT the run trained from the config saved in the checkpoint, loads
the weights on one device, or over tensor and pipeline parallel ranks under torchrun
(``tensor=``, ``pipeline=``), resharding from whatever TP/PP layout saved them, and finds
the tokenizer in the manifest of the shards it trained on. It then scores, with the same
results on every rank and at every layout:

- ``loglikelihood([(context, continuation), ...])``: sum of log p(continuation | context)
  and whether the continuation is the greedy one, as lm-evaluation-harness defines them;
- ``generate(contexts, max_new_tokens, until)``: greedy continuations through megatron's
  KV cache, stopped at the end-of-document token or at a stop string (not yet across
  pipeline stages);
- ``dataset_loss(dataset)``: token-weighted mean NLL over a megatron GPTDataset, which is the
  training loop's validation loss computed over exactly the given samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_prep.tokenizers import Tokenizer
from megatron_split.data.datasets import checkpoint_tokenizer
from megatron_split.inference import forward_stages, from_last_stage, output_positions


@dataclass
class ScoredContinuation:
    logprob: float  # sum over the continuation's tokens of log p(token | everything before)
    is_greedy: bool  # every continuation token is the argmax of its distribution
    tokens: int


class CheckpointLM:
    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer | None,
        seq_length: int,
        name: str = "model",
        meta: dict | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.name = name
        self.meta = meta or {}  # the checkpoint's: step, tokens, lineage, config
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls,
        path: str | Path,
        tokenizer: Tokenizer | None = None,
        seq_length: int | None = None,
        tensor: int = 1,
        pipeline: int = 1,
    ) -> CheckpointLM:
        """The model of checkpoint ``path`` over ``tensor`` x ``pipeline`` ranks;
        ``tokenizer`` defaults to the one it reads, and ``seq_length`` (the most tokens it
        reads at once) to its config's, never beyond."""
        from megatron_split.inference import load_trained_model

        trained = load_trained_model(path, tensor, pipeline)
        if tokenizer is None:
            tokenizer = checkpoint_tokenizer(trained.meta)
        return cls(
            trained.module,
            tokenizer,
            min(seq_length or trained.config.model.seq_length, trained.config.model.seq_length),
            name=str(trained.path),
            meta=trained.meta,
        )

    # ---- scoring ---------------------------------------------------------------------
    # inference mode, not just no_grad: no version counters or views tracked (4% of scoring)
    @torch.inference_mode()
    def logits(
        self, tokens_BS: torch.Tensor, positions: slice | torch.Tensor = slice(None)
    ) -> torch.Tensor | None:
        """(B, P, V) float32 next-token logits of a batch of token ids at sequence
        ``positions`` (all S by default; a (B, P) tensor gives each row its own), on the
        pipeline's last stage (None on the others)."""
        tokens_BS = tokens_BS.to(self.device)
        position_ids_BS = torch.arange(tokens_BS.shape[1], device=self.device).expand_as(tokens_BS)
        with output_positions(self.model, positions):
            logits_BPV = forward_stages(self.model, tokens_BS, position_ids_BS,
                                        runtime_gather_output=True)  # fmt: skip
        return None if logits_BPV is None else logits_BPV.float()

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], batch_size: int = 16
    ) -> list[ScoredContinuation]:
        """Score each (context, continuation) pair of strings (the continuation's own leading
        space included, as lm-evaluation-harness writes them)."""
        if self.tokenizer is None:
            raise ValueError(f"{self.name}: no tokenizer to encode text with")
        encoded = [encode_pair(self.tokenizer, context, cont) for context, cont in requests]
        return self.loglikelihood_tokens(encoded, batch_size)

    def loglikelihood_tokens(
        self, requests: Sequence[tuple[list[int], list[int]]], batch_size: int = 16
    ) -> list[ScoredContinuation]:
        """Score (context ids, continuation ids) pairs; contexts are cut from the left to fit
        the model's sequence length, as lm-evaluation-harness does.

        Requests that give the model the same input (the choices " A" to " D" of one
        question: one context, one-token continuations) share one forward pass, and a
        prefix the inputs of a batch share (a task's instructions, its few-shot examples)
        is read once (see ``_scored_logits``).
        """
        windows = [self._window(*request) for request in requests]
        readers: dict[tuple[int, ...], list[int]] = {}  # model input -> requests reading it
        for i, (ids, _) in enumerate(windows):
            readers.setdefault(tuple(ids[:-1]), []).append(i)
        results: list[ScoredContinuation | None] = [None] * len(requests)
        budget = CPU_TOKENS_PER_PASS if self.device.type == "cpu" else None
        for batch in batches(reading_order(list(readers)), batch_size, budget):
            # Position t predicts token t + 1, so a continuation's predictors are the last
            # n_cont positions of its input. Only each row's last ``scored`` positions reach
            # the output layer, wherever the row ends.
            scored = max(windows[i][1] for key in batch for i in readers[key])
            first = min(len(key) - windows[i][1] for key in batch for i in readers[key])
            logits_BPV = self._scored_logits(batch, scored, first)
            if logits_BPV is None:
                continue  # an earlier pipeline stage: the last one scores
            for row, key in enumerate(batch):
                for i in readers[key]:
                    ids, n_cont = windows[i]
                    target = torch.tensor(ids[-n_cont:], device=self.device)
                    # normalise only the rows scored: no second (B, P, V) tensor
                    logprobs_CV = torch.log_softmax(logits_BPV[row, scored - n_cont :], -1)
                    results[i] = ScoredContinuation(
                        logprob=float(logprobs_CV.gather(1, target[:, None]).sum()),
                        is_greedy=bool((logprobs_CV.argmax(dim=-1) == target).all()),
                        tokens=n_cont,
                    )
        return from_last_stage(results)  # type: ignore[return-value]

    @torch.inference_mode()
    def _scored_logits(
        self, rows: list[tuple[int, ...]], scored: int, first: int
    ) -> torch.Tensor | None:
        """(B, ``scored``, V) float32 logits at each row's last ``scored`` positions, of a
        batch of inputs right-padded (causal attention never lets a real position read the
        padding), none scored before position ``first``; None on an earlier pipeline stage.

        When the rows share a prefix worth reading once (``shared_prefix``) that ends
        before ``first``, the prefix is read once, in one row, into megatron's KV cache; the
        cache is copied to every row and the rows' remainders read on from it under a
        causal mask, at their own positions: the shared prefix costs one row, not B.
        """
        batch, width = len(rows), max(len(row) for row in rows)
        ends_B1 = torch.tensor([len(row) for row in rows])[:, None]
        # a row shorter than ``scored`` repeats its first position, which nothing reads
        positions_BP = (ends_B1 - scored + torch.arange(scored)).clamp(min=0)
        shared = shared_prefix(rows, first) if self._reads_cache_with_masks() else 0
        tokens_BS = torch.zeros(batch, width - shared, dtype=torch.long)
        for row, ids in enumerate(rows):
            tokens_BS[row, : len(ids) - shared] = torch.tensor(ids[shared:])
        if not shared:
            return self.logits(tokens_BS, positions_BP)
        from megatron.core.inference.contexts import StaticInferenceContext

        cache = StaticInferenceContext(batch, width)
        self._read_shared_prefix(cache, rows[0][:shared])  # rows right-padded: no shifts
        cache.materialize_only_last_token_logits = False
        query_S = torch.arange(shared, width, device=self.device)
        blocked_11SK = (torch.arange(width, device=self.device) > query_S[:, None])[None, None]
        with output_positions(self.model, (positions_BP - shared).clamp(min=0)):
            logits_BPV = self.model(tokens_BS.to(self.device), query_S.expand(batch, -1),
                                    blocked_11SK, inference_context=cache,
                                    runtime_gather_output=True)  # fmt: skip
        return logits_BPV.float()

    def _read_shared_prefix(
        self, cache: Any, prefix: list[int], shifts_B: Sequence[int] | None = None
    ) -> None:
        """Read ``prefix`` once, into the first row of a static KV cache, give every row
        its copy (shifted as ``share_cached_prefix`` says) and set the cache to read on."""
        from megatron_split.model.cached_attention import share_cached_prefix

        prefix_1P = torch.tensor([prefix], device=self.device)
        self.model(prefix_1P, torch.arange(len(prefix), device=self.device)[None], None,
                   inference_context=cache, runtime_gather_output=True)  # fmt: skip
        share_cached_prefix(self.model, cache, len(prefix), shifts_B)
        cache.sequence_len_offset = len(prefix)

    def _reads_cache_with_masks(self) -> bool:
        """Whether a forward pass can read on from a KV cache here: one pipeline stage (the
        cache lives in one process's layers) and core attention that applies the mask it is
        given at an offset (SDPA or megatron's unfused attention; not every Transformer
        Engine backend does)."""
        from megatron.core import parallel_state as ps
        from megatron.core.transformer.dot_product_attention import DotProductAttention
        from megatron.core.utils import get_attr_wrapped_model

        from megatron_split.model.sdpa import SDPAttention

        if ps.get_pipeline_model_parallel_world_size() > 1:
            return False
        decoder = get_attr_wrapped_model(self.model, "decoder")
        attention = decoder.layers[0].self_attention.core_attention
        return isinstance(attention, SDPAttention | DotProductAttention)

    def _shares_decoding_prefix(self) -> bool:
        """Whether decoding can read a shared prefix once: a cache read on under masks,
        with its keys rotated as they enter it (or no rotary embedding at all)."""
        from megatron.core.utils import get_attr_wrapped_model

        from megatron_split.model.cached_attention import RotatedKeyCacheAttention

        decoder = get_attr_wrapped_model(self.model, "decoder")
        attention = decoder.layers[0].self_attention
        return self._reads_cache_with_masks() and isinstance(attention, RotatedKeyCacheAttention)

    @torch.inference_mode()
    def generate(
        self,
        contexts: Sequence[list[int]],
        max_new_tokens: int,
        until: Sequence[str] = (),
        batch_size: int = 16,
    ) -> list[list[int]]:
        """Greedy continuation ids of each context: at most ``max_new_tokens``, ending before
        the end-of-document token or once the decoded text holds a string of ``until``.

        Contexts are cut from the left to leave room for the new tokens, as lm-evaluation-
        harness does. Decoding reads megatron's static KV cache, one position per step, in
        batches of contexts of similar lengths, each read at once (see ``_decode``).
        """
        from megatron.core import parallel_state as ps

        if not 0 < max_new_tokens < self.seq_length:
            raise ValueError(f"max_new_tokens must lie in 1..{self.seq_length - 1}")
        if ps.get_pipeline_model_parallel_world_size() > 1:
            raise ValueError(
                f"{self.name}: generation across pipeline stages is not supported; load the "
                "model at pipeline=1 (tensor parallel ranks generate)"
            )
        eod = self.tokenizer.eod_id if self.tokenizer is not None else None
        if eod is None and not all(contexts):
            raise ValueError("an empty context needs a tokenizer's end-of-document token")
        keep = self.seq_length - max_new_tokens
        rows = [list(ids[-keep:]) or [eod] for ids in contexts]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        outputs: list[list[int]] = [[] for _ in rows]
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            new = self._decode([rows[i] for i in batch], max_new_tokens, eod, until)
            for i, ids in zip(batch, new, strict=True):
                outputs[i] = ids
        return outputs

    def _decode(
        self, rows: list[list[int]], max_new_tokens: int, eod: int | None, until: Sequence[str]
    ) -> list[list[int]]:
        """Greedy decoding of a batch of contexts through one static KV cache.

        The contexts are padded on the left to the longest; a mask keeps every row from
        reading its padding, and a row's position ids count from its first token. Rotary
        embeddings depend only on differences of positions, which the padding leaves as
        they were. Only the last position reaches the output layer.

        A prefix the rows share (a chat template's system turn) is read once, at the
        cache's first positions, and the padding goes between it and each row's rest; every
        row's copy of it is rotated on by the row's padding (``share_cached_prefix``), so
        that relative positions stay those of the row read whole. The rest is read in
        passes over consecutive rows (``prompt_passes``), each from its longest row's first
        token on: the short prompts of a batch do not read the long ones' padding.
        """
        from megatron.core.inference.contexts import StaticInferenceContext

        batch, width = len(rows), max(len(row) for row in rows)
        shared = shared_prefix(rows) if self._shares_decoding_prefix() else 0
        pads = [width - len(row) for row in rows]
        padded = [[0] * pad + row[shared:] for pad, row in zip(pads, rows, strict=True)]
        tokens_BS = torch.tensor(padded, device=self.device)
        pads_B1 = torch.tensor(pads, device=self.device)[:, None]
        index_S = torch.arange(width, device=self.device)
        # cache index i holds a row's token i - pad, or prefix token i below ``shared``
        positions_BS = (index_S[shared:] - pads_B1).clamp(min=0)
        readable_BS = (index_S < shared) | (index_S >= shared + pads_B1)  # keys a row reads
        causal_SS = index_S[shared:, None] >= index_S
        # a padding position reads itself, so that no row of the softmax is empty
        allowed_BSS = (causal_SS & readable_BS[:, None, :]) | (index_S[shared:, None] == index_S)
        blocked_B1SS = ~allowed_BSS[:, None]  # megatron's masks: True where not allowed
        cache = StaticInferenceContext(batch, width + max_new_tokens)
        if shared:
            self._read_shared_prefix(cache, rows[0][:shared], pads)
        budget = CPU_TOKENS_PER_PASS if self.device.type == "cpu" else None
        feed = [0] * batch  # each row's next token
        passes = prompt_passes([len(row) - shared for row in rows], budget)
        for group in sorted(passes, key=lambda group: min(pads[b] for b in group)):
            skip = min(pads[b] for b in group)  # padding every row of the pass has
            cache.batch_size_offset, cache.sequence_len_offset = group.start, shared + skip
            rows_B = slice(group.start, group.stop)
            with output_positions(self.model, slice(-1, None)):
                logits_B1V = self.model(
                    tokens_BS[rows_B, skip:],
                    positions_BS[rows_B, skip:],
                    blocked_B1SS[rows_B, :, skip:],
                    inference_context=cache,
                    runtime_gather_output=True,
                )
            feed[rows_B] = logits_B1V[:, -1].argmax(dim=-1).tolist()
        cache.batch_size_offset, cache.sequence_len_offset = 0, width
        positions_B1 = positions_BS[:, -1:]
        new: list[list[int]] = [[] for _ in rows]
        running = [True] * batch
        while True:
            for b, token in enumerate(feed):
                if not running[b]:
                    continue
                if token == eod:
                    running[b] = False
                    continue
                new[b].append(token)
                done = len(new[b]) == max_new_tokens
                running[b] = not (done or (until and self._reached(new[b], until)))
            if not any(running):
                return new
            # finished rows ride along (their tokens are never read): the cache keeps rows
            # aligned at one position
            positions_B1 = positions_B1 + 1
            readable_BS = torch.cat([readable_BS, readable_BS.new_ones(batch, 1)], dim=1)
            with output_positions(self.model, slice(-1, None)):
                logits_B1V = self.model(
                    torch.tensor(feed, device=self.device)[:, None],
                    positions_B1,
                    ~readable_BS[:, None, None, :],
                    inference_context=cache,
                    runtime_gather_output=True,
                )
            cache.sequence_len_offset += 1
            feed = logits_B1V[:, -1].argmax(dim=-1).tolist()

    def generate_text(
        self, contexts: Sequence[str], max_new_tokens: int, until: Sequence[str] = (), **kwargs
    ) -> list[str]:
        """``generate`` on strings; each text is cut before the first ``until`` string."""
        if self.tokenizer is None:
            raise ValueError(f"{self.name}: no tokenizer to encode text with")
        ids = [self.tokenizer.encode_prompt(c) if c else [] for c in contexts]
        return [
            cut_at(self.tokenizer.decode(out), until)
            for out in self.generate(ids, max_new_tokens, until, **kwargs)
        ]

    def _reached(self, ids: list[int], until: Sequence[str]) -> bool:
        text = self.tokenizer.decode(ids)
        return any(stop in text for stop in until)

    @torch.no_grad()
    def dataset_loss(self, dataset: Any, samples: int | None = None, batch_size: int = 8) -> dict:
        """Token-weighted mean NLL (nats) over the first ``samples`` samples of a GPTDataset."""
        from megatron_split.data import collate

        n = len(dataset) if samples is None else min(samples, len(dataset))
        total, count = 0.0, 0
        for first in range(0, n, batch_size):
            batch = collate([dataset[i] for i in range(first, min(first + batch_size, n))])
            tokens_BS, labels_BS = batch["tokens"].to(self.device), batch["labels"].to(self.device)
            mask_BS = batch["loss_mask"].to(self.device).float()
            position_ids_BS = batch["position_ids"].to(self.device)
            loss_BS = forward_stages(self.model, tokens_BS, position_ids_BS, labels=labels_BS)
            if loss_BS is not None:  # the pipeline's last stage
                total += float((loss_BS.float() * mask_BS).sum())
            count += int(mask_BS.sum())
        return {"loss": from_last_stage(total) / max(count, 1), "tokens": count, "samples": n}

    # ---- helpers ---------------------------------------------------------------------
    def _window(self, context: list[int], continuation: list[int]) -> tuple[list[int], int]:
        """(ids, continuation length): at most seq_length + 1 ids, cut on the left; the model
        reads all but the last, and predicts the continuation's."""
        if not continuation:
            raise ValueError("an empty continuation has no likelihood to score")
        ids = (context + continuation)[-(self.seq_length + 1) :]
        return ids, min(len(continuation), len(ids) - 1)


# On a CPU, a forward pass reads at most this many tokens (rows x padded width, less a prefix
# read once): fewer leave the matrix products short, more push the activations (SmolLM2's
# MLP: 12 KB a token) out of the caches. Measured on SmolLM2-135M and MMLU, 2 cores: 1.86 ms
# a token at 512 tokens a pass, 1.63 at 1,024, 1.46 at 2,048 to 3,072, slower from 4,096 on.
CPU_TOKENS_PER_PASS = 2048

# Inputs that share a prefix of at least this many tokens are batched together, and a
# batch's shared prefix is read once when that saves at least MIN_TOKENS_SAVED tokens:
# below, the extra pass (one row through every layer) and the cache copy cost about what
# they save.
MIN_SHARED_PREFIX = 8
MIN_TOKENS_SAVED = 64


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """The length of the longest prefix every row starts with."""
    first, n = rows[0], min(len(row) for row in rows)
    for row in rows[1:]:
        n = next((t for t in range(n) if row[t] != first[t]), n)
    return n


def shared_prefix(rows: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How much of the rows' common prefix (at most ``limit`` tokens, and never a whole
    row) a batch reads once: all of it when that saves enough, else nothing."""
    shared = min(common_prefix(rows), min(len(row) for row in rows) - 1)
    if limit is not None:
        shared = min(shared, limit)
    worth = shared >= MIN_SHARED_PREFIX and shared * (len(rows) - 1) >= MIN_TOKENS_SAVED
    return shared if worth else 0


def reading_order(inputs: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Model inputs in the order they are batched: those sharing a prefix of at least
    ``MIN_SHARED_PREFIX`` tokens (a task's header, its few-shot examples) side by side, so
    that a batch reads it once, and longest first, so that a batch pads little: groups by
    their longest input, inputs within a group by length."""
    groups: list[list[tuple[int, ...]]] = []
    for ids in sorted(inputs):  # lexicographic: a shared prefix makes neighbours
        if groups and common_prefix([groups[-1][0], ids]) >= MIN_SHARED_PREFIX:
            groups[-1].append(ids)
        else:
            groups.append([ids])
    groups = [sorted(group, key=len, reverse=True) for group in groups]
    groups.sort(key=lambda group: len(group[0]), reverse=True)
    return [ids for group in groups for ids in group]


def batches(
    inputs: list[tuple[int, ...]], batch_size: int, token_budget: int | None = None
) -> Iterator[list[tuple[int, ...]]]:
    """Consecutive inputs, at most ``batch_size`` at a time and at most ``token_budget``
    tokens read (rows x padded width, less the shared prefix read once); always one input
    at least."""
    batch: list[tuple[int, ...]] = []
    for ids in inputs:
        grown = [*batch, ids]
        width = max(len(row) for row in grown)
        tokens = len(grown) * width - (len(grown) - 1) * shared_prefix(grown)
        if batch and (len(batch) == batch_size or (token_budget and tokens > token_budget)):
            yield batch
            batch = []
        batch.append(ids)
    if batch:
        yield batch


def prompt_passes(lengths: Sequence[int], token_budget: int | None) -> list[range]:
    """Consecutive rows, from the last back, read in one pass each: at most
    ``token_budget`` tokens a pass (its rows times its longest), always one row at least;
    all rows in one pass without a budget. Rows sorted by length pad little."""
    if token_budget is None:
        return [range(len(lengths))]
    passes, stop = [], len(lengths)
    while stop:
        start, longest = stop - 1, lengths[stop - 1]
        while start and (stop - start + 1) * max(longest, lengths[start - 1]) <= token_budget:
            start -= 1
            longest = max(longest, lengths[start])
        passes.append(range(start, stop))
        stop = start
    return passes


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` before the first occurrence of any string of ``until``."""
    return min((text[: text.index(stop)] for stop in until if stop in text), key=len, default=text)


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list, list]:
    """(context ids, continuation ids) of a pair of strings."""
    if not context:  # an empty context conditions on the end-of-document token
        return [tokenizer.eod_id], tokenizer.encode_prompt(continuation)
    # Encode the whole string and split at the context's own length, so that the
    # continuation's tokens are those the model would see (lm-eval does the same).
    whole = tokenizer.encode_prompt(context + continuation)
    n_context = min(len(tokenizer.encode_prompt(context)), len(whole) - 1)
    return whole[:n_context], whole[n_context:]
