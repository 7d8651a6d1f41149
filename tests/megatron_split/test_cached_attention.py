"""Decoding through a KV cache of rotated keys: each key rotated once, the logits of reading
the whole sequence at once, and transformers' greedy continuations."""

import pytest
import torch

from eval.lm import CheckpointLM
from megatron_split.checkpoint.hf_import import import_hf
from tests.megatron_split.hf_models import random_model

pytestmark = pytest.mark.slow


def imported(family: str, tokenizer_dir, tmp_path):
    hf_model = random_model(family, tokenizer_dir, tmp_path / "hf")
    return hf_model, CheckpointLM.load(import_hf(tmp_path / "hf", tmp_path / "run"))


def test_decoding_rotates_each_new_key_once_and_gives_the_logits_of_one_full_pass(
    tokenizer_dir, tmp_path, monkeypatch
):
    import megatron.core.transformer.attention as attention
    from megatron.core.inference.contexts import StaticInferenceContext

    import megatron_split.model.cached_attention as cached_attention

    _, lm = imported("llama3-untied-biases", tokenizer_dir, tmp_path)
    tokens_1S = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(1))
    positions_1S = torch.arange(24)[None]
    with torch.inference_mode():
        want_1SV = lm.model(tokens_1S, positions_1S, None)
    rotated: list[int] = []  # positions each rotation call covers, queries and keys alike

    def counting(rotate):
        def wrapper(t, *args, **kwargs):
            rotated.append(t.shape[0])
            return rotate(t, *args, **kwargs)

        return wrapper

    for module in (attention, cached_attention):
        monkeypatch.setattr(module, "apply_rotary_pos_emb", counting(module.apply_rotary_pos_emb))
    cache = StaticInferenceContext(1, 24)
    cache.materialize_only_last_token_logits = False
    with torch.inference_mode():
        got = [lm.model(tokens_1S[:, :16], positions_1S[:, :16], None, inference_context=cache,
                        runtime_gather_output=True)]  # fmt: skip
        for step in range(16, 24):
            cache.sequence_len_offset = step
            rotated.clear()
            got.append(lm.model(tokens_1S[:, step : step + 1], positions_1S[:, step : step + 1],
                                None, inference_context=cache,
                                runtime_gather_output=True))  # fmt: skip
            assert rotated == [1, 1] * 2  # the new key and the query, in each of 2 layers
    assert torch.allclose(torch.cat(got, dim=1), want_1SV, atol=1e-5)


def transformers_continuations(hf_model, lm, prompts, got, max_new_tokens):
    """Assert that ``got`` are transformers' greedy continuations of ``prompts``."""
    for prompt, ids in zip(prompts, got, strict=True):
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=lm.tokenizer.eod_id,
                                pad_token_id=0)  # fmt: skip
        want = out[0, len(prompt) :].tolist()
        if lm.tokenizer.eod_id in want:
            want = want[: want.index(lm.tokenizer.eod_id)]
        assert ids == want
    assert len({tuple(ids) for ids in got}) == len(prompts)  # a comparison that can fail


# a budget of 8 tokens reads the prompts below in several passes, from the longest
@pytest.mark.parametrize("budget", [2048, 8], ids=["one-pass", "passes"])
@pytest.mark.parametrize("family", ["llama-gqa-tied", "qwen2-qkv-bias"])
def test_greedy_continuations_are_transformers_own(
    family, budget, tokenizer_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr("eval.lm.CPU_TOKENS_PER_PASS", budget)
    hf_model, lm = imported(family, tokenizer_dir, tmp_path)
    prompts = [[5, 17, 90, 3], [250, 11, 9, 9, 42, 7, 300, 12, 1], [77]]
    got = lm.generate(prompts, max_new_tokens=16, batch_size=3)
    transformers_continuations(hf_model, lm, prompts, got, 16)


@pytest.mark.parametrize("budget", [2048, 24], ids=["one-pass", "passes"])
@pytest.mark.parametrize("family", ["llama-gqa-tied", "gpt2"])  # rotary and learned positions
def test_a_shared_prefix_read_once_gives_transformers_continuations(
    family, budget, tokenizer_dir, tmp_path, monkeypatch
):
    import megatron_split.model.cached_attention as cached_attention

    monkeypatch.setattr("eval.lm.CPU_TOKENS_PER_PASS", budget)
    hf_model, lm = imported(family, tokenizer_dir, tmp_path)
    generator = torch.Generator().manual_seed(2)
    system = torch.randint(3, 400, (14,), generator=generator).tolist()  # a template's turn
    prompts = [system + torch.randint(3, 400, (n,), generator=generator).tolist()
               for n in (1, 9, 4, 12, 2, 7, 5, 3)]  # fmt: skip
    shared: list[tuple[int, list[int]]] = []

    def recording(model, cache, length, shifts_B=None):
        shared.append((length, list(shifts_B or [])))
        return share_cached_prefix(model, cache, length, shifts_B)

    share_cached_prefix = cached_attention.share_cached_prefix
    monkeypatch.setattr(cached_attention, "share_cached_prefix", recording)
    got = lm.generate(prompts, max_new_tokens=12, batch_size=8)
    # read once, 14 tokens, each row's copy shifted by its padding: the lengths sorted
    assert shared == [(14, [11, 10, 9, 8, 7, 5, 3, 0])]
    transformers_continuations(hf_model, lm, prompts, got, 12)
