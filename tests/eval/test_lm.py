"""CheckpointLM: native checkpoints scored on one process, consistent with training's loss."""

import json
import os
import subprocess

import pytest
import torch

from eval.lm import CheckpointLM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trunk(demo_family) -> CheckpointLM:
    return CheckpointLM.load(demo_family / "trunk")


@pytest.fixture(scope="module")
def texts(demo_family) -> list[str]:
    corpus = sorted((demo_family / "corpus").glob("*.jsonl"))[0]
    lines = corpus.read_text().splitlines()[:12]
    return [json.loads(line)["text"][:400] for line in lines]


def test_loads_the_run_its_tokenizer_and_sequence_length(trunk, demo_family):
    assert trunk.name.endswith("trunk/checkpoints/step_0000012")
    assert trunk.seq_length == 128
    assert trunk.tokenizer.vocab_size == 1024


def test_loglikelihood_equals_minus_the_training_loss_of_the_same_tokens(trunk, texts):
    context, continuation = texts[0][:100], texts[0][100:200]
    (scored,) = trunk.loglikelihood([(context, continuation)])
    ids = trunk.tokenizer.encode(context + continuation)
    tokens_1S, labels_1S = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    with torch.no_grad():
        loss_1S = trunk.model(tokens_1S, torch.arange(len(ids) - 1)[None], None, labels=labels_1S)
    assert scored.logprob == pytest.approx(-float(loss_1S[0, -scored.tokens :].sum()), abs=1e-4)
    assert scored.tokens == len(ids) - len(trunk.tokenizer.encode(context))


def test_batching_and_padding_do_not_change_scores(trunk, texts):
    requests = [(t[:50], t[50:150]) for t in texts]
    one_by_one = trunk.loglikelihood(requests, batch_size=1)
    batched = trunk.loglikelihood(requests, batch_size=5)
    for a, b in zip(one_by_one, batched, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.is_greedy, a.tokens) == (b.is_greedy, b.tokens)


def test_contexts_longer_than_the_model_are_cut_from_the_left(trunk):
    context = list(range(5, 5 + 300))  # 300 token ids, more than seq_length = 128
    continuation = [7, 8, 9]
    (long,) = trunk.loglikelihood_tokens([(context, continuation)])
    (cut,) = trunk.loglikelihood_tokens([(context[-(128 + 1 - 3) :], continuation)])
    assert long.logprob == pytest.approx(cut.logprob, abs=1e-5)


def test_the_greedy_continuation_is_recognised(trunk):
    context = [3, 4, 5, 6]
    with torch.no_grad():
        best = int(trunk.logits(torch.tensor([context]))[0, -1].argmax())
    (greedy,) = trunk.loglikelihood_tokens([(context, [best])])
    (other,) = trunk.loglikelihood_tokens([(context, [(best + 1) % 1024])])
    assert greedy.is_greedy and not other.is_greedy
    assert greedy.logprob > other.logprob


def test_choices_of_one_question_share_a_forward_pass_and_score_as_alone(trunk, texts):
    context = texts[1][:120] + "\nAnswer:"
    requests = [(context, f" {letter}") for letter in "ABCD"] + [(context, " B is longer")]
    together = trunk.loglikelihood(requests)
    for request, shared in zip(requests, together, strict=True):
        (alone,) = trunk.loglikelihood([request])
        assert shared.logprob == pytest.approx(alone.logprob, abs=1e-5)
        assert shared.is_greedy == alone.is_greedy


def test_the_output_layer_reads_only_each_rows_scored_positions(trunk):
    """Rows of different lengths end at different places: the output layer reads each
    row's last positions, as many as the batch's longest continuation, not the span from
    the shortest row's first scored position to the longest row's end."""
    requests = [([5] * n, [7, 8][:k]) for n, k in ((60, 1), (9, 2), (31, 1), (44, 1))]
    read: list[tuple[int, ...]] = []
    hook = trunk.model.output_layer.register_forward_hook(  # sees the input it read
        lambda _, args, _output: read.append(tuple(args[0].shape[:2]))
    )
    batched = trunk.loglikelihood_tokens(requests, batch_size=4)
    hook.remove()
    assert read == [(2, 4)]  # (positions, rows): the longest continuation, every row
    for request, scored in zip(requests, batched, strict=True):
        (alone,) = trunk.loglikelihood_tokens([request])
        assert scored.logprob == pytest.approx(alone.logprob, abs=1e-4)
        assert scored.is_greedy == alone.is_greedy


def test_generation_is_the_greedy_chain_whatever_the_batch(trunk, texts):
    encoded = [trunk.tokenizer.encode(text) for text in texts[:4]]
    # sorted by length and batched in pairs: (10, 10) and (10, 25), a row reading its
    # context while the other generates
    contexts = [encoded[0][:10], encoded[1][:25], encoded[2][:10], encoded[3][:10]]
    batched = trunk.generate(contexts, max_new_tokens=12, batch_size=2)
    alone = [trunk.generate([c], max_new_tokens=12)[0] for c in contexts]
    assert batched == alone
    for context, new in zip(contexts, batched, strict=True):
        assert 0 < len(new) <= 12 and trunk.tokenizer.eod_id not in new
        # the cached decoding gives the tokens a full forward pass ranks first
        (scored,) = trunk.loglikelihood_tokens([(context, new)])
        assert scored.is_greedy


def test_generation_stops_at_the_first_stop_string(trunk, texts):
    (full,) = trunk.generate_text([texts[0][:60]], max_new_tokens=24)
    stop = full.strip()[3:5]  # a string the free generation does produce
    (stopped,) = trunk.generate_text([texts[0][:60]], max_new_tokens=24, until=[stop, "§"])
    assert stopped == full[: full.index(stop)]
    with pytest.raises(ValueError, match="max_new_tokens"):
        trunk.generate([[1, 2]], max_new_tokens=128)


def test_tensor_parallel_ranks_generate_what_one_device_does(tokenizer_dir, tmp_path):
    """A random Llama (so that greedy tokens vary) imported from Hugging Face generates the
    same text at TP=2 under torchrun as on one device, and scores a batch that reads a
    shared prefix once through the KV cache the same; across pipeline stages generation is
    refused by name."""
    from megatron_split.checkpoint.hf_import import import_hf
    from tests.eval.generate_at_layout import PROMPTS, shared_prefix_requests
    from tests.megatron_split.hf_models import random_model
    from tests.megatron_split.runs import python

    source = tmp_path / "llama"
    random_model("llama-gqa-tied", tokenizer_dir, source)
    run = str(import_hf(source, tmp_path / "run"))
    one = CheckpointLM.load(run)
    want = one.generate_text(PROMPTS, max_new_tokens=12, batch_size=2)
    assert len(set(want)) == len(PROMPTS)  # distinct texts: a comparison that can fail
    want_scores = [s.logprob for s in one.loglikelihood_tokens(shared_prefix_requests(), 8)]
    for tensor, pipeline in (("2", "1"), ("1", "2")):
        out = tmp_path / f"tp{tensor}pp{pipeline}.json"
        cmd = [*python(2), "-m", "tests.eval.generate_at_layout", run, str(out), tensor,
               pipeline]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        if pipeline == "1":
            assert done.returncode == 0, done.stderr[-3000:]
            got = json.loads(out.read_text())
            assert got["texts"] == want
            assert got["scores"] == pytest.approx(want_scores, abs=1e-4)
        else:
            assert done.returncode != 0
            assert "generation across pipeline stages is not supported" in done.stderr


@pytest.mark.parametrize("family", ["llama-gqa-tied", "gpt2"])  # rotary, learned positions
def test_a_prefix_a_batch_shares_is_read_once_with_the_scores_of_reading_every_row(
    family, tokenizer_dir, tmp_path
):
    from eval.lm import shared_prefix
    from megatron_split.checkpoint.hf_import import import_hf
    from tests.eval.generate_at_layout import shared_prefix_requests
    from tests.megatron_split.hf_models import random_model

    random_model(family, tokenizer_dir, tmp_path / "hf")
    lm = CheckpointLM.load(import_hf(tmp_path / "hf", tmp_path / "run"))
    requests = shared_prefix_requests()
    assert shared_prefix([ctx + cont[:-1] for ctx, cont in requests]) == 40
    read: list[int] = []
    hook = lm.model.embedding.register_forward_pre_hook(
        lambda _, args, kwargs: read.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    batched = lm.loglikelihood_tokens(requests, batch_size=8)
    alone = lm.loglikelihood_tokens(requests, batch_size=1)
    hook.remove()
    widths = [len(ctx) + len(cont) - 1 for ctx, cont in requests]
    assert read[:2] == [40, len(requests) * (max(widths) - 40)]  # the prefix once, then the rest
    assert read[2:] == sorted(widths, reverse=True)
    for a, b in zip(batched, alone, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.is_greedy, a.tokens) == (b.is_greedy, b.tokens)


def test_prompt_passes_cover_every_row_once_within_the_budget():
    from eval.lm import prompt_passes

    lengths = [1, 2, 3, 4, 5, 7, 9, 12]
    passes = prompt_passes(lengths, token_budget=24)
    assert passes == [range(6, 8), range(3, 6), range(0, 3)]  # the longest rows first
    assert all(len(p) * max(lengths[b] for b in p) <= 24 for p in passes)
    assert prompt_passes(lengths, token_budget=5)[:2] == [range(7, 8), range(6, 7)]  # one row
    assert prompt_passes(lengths, token_budget=None) == [range(8)]
