"""Overhead of our training loop over a bare megatron.core loop, measured in the same process.

Both loops train the same model on the same shards with the same batch: the bare loop is
only megatron's forward-backward schedule and optimizer step; ours adds everything a real
run has (LR schedule, loss reduction, logging to JSONL and TensorBoard, preemption checks,
checkpoints every 100 steps), once with synchronous checkpoints and once with background
ones (``checkpoint.async_save``). Each round runs the three once, in an order rotated from
round to round, so that neither machine noise nor a place in the order favours one; each
round gives each variant's overhead = baseline tokens/s / its tokens/s - 1, and the JSON
reports the median over rounds (not the best round), with every round's numbers.

    python benchmarks/train_overhead.py --json benchmarks/results/train_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from megatron_split.config import apply_overrides, from_dict, to_dict
from megatron_split.data.synthetic import write_synthetic_shard
from megatron_split.train.config import RunConfig


def bare_megatron_loop(cfg: RunConfig) -> float:
    """Tokens/s of megatron's schedule + optimizer alone, on our model and data."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_split.data import step_microbatches
    from megatron_split.data.datasets import dataset_tokenizer
    from megatron_split.runtime import init_distributed, seed_everything
    from megatron_split.train.loop import build_model, make_forward_step

    runtime = init_distributed(cfg.parallel.tensor, cfg.parallel.pipeline)
    tokenizer = dataset_tokenizer(cfg.data.paths)
    cfg.model.vocab_size = tokenizer.vocab_size
    seed_everything(cfg.seed)
    ddp, _ = build_model(cfg, runtime)
    optimizer = cfg.optim.build([ddp], False, False)
    loop = cfg.train
    train_data, _ = cfg.data.build(
        tokenizer,
        cfg.model.seq_length,
        loop.steps * loop.global_batch,
        loop.global_batch,
        Path(cfg.run_dir) / "data_cache",
    )
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    forward_backward, forward_step = get_forward_backward_func(), make_forward_step(runtime.device)
    start = time.perf_counter()
    for step in range(loop.steps):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        forward_backward(
            forward_step_func=forward_step,
            data_iterator=step_microbatches(
                train_data,
                step * loop.global_batch,
                loop.global_batch,
                loop.micro_batch,
                dp_rank,
                dp_size,
            ),
            model=[ddp],
            num_microbatches=loop.global_batch // (loop.micro_batch * dp_size),
            seq_length=cfg.model.seq_length,
            micro_batch_size=loop.micro_batch,
            forward_only=False,
        )
        optimizer.step()
    return loop.steps * loop.global_batch * cfg.model.seq_length / (time.perf_counter() - start)


def our_loop(cfg: RunConfig) -> float:
    from megatron_split.train.loop import Trainer

    result = Trainer(cfg).run()
    return (
        result["steps_run"] * cfg.train.global_batch * cfg.model.seq_length / result["loop_seconds"]
    )


VARIANTS = {"ours": [], "ours_async_checkpoints": ["checkpoint.async_save=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6, help="a multiple of 3 puts each "
                        "variant first, second and third equally often")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="dotted.key=value on the run config")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="msplit-bench-"))
    shards = [write_synthetic_shard(work / f"shard{i}", n_docs=400, seed=i) for i in range(2)]
    base = [
        "data.paths=[" + ",".join(shards) + "]",
        f"train.steps={args.steps}",
        "train.eval_every=0",
        "train.progress=false",
        "checkpoint.every=100",
        "checkpoint.save_at_end=false",
        *args.overrides,
    ]

    def config(name: str, round_: int, extra: list[str]) -> RunConfig:
        tree = apply_overrides(to_dict(RunConfig()), [*base, *extra])
        return replace(from_dict(RunConfig, tree), run_dir=str(work / f"{name}{round_}"))

    def tokens_per_s(name: str, round_: int) -> float:
        if name == "baseline":
            return bare_megatron_loop(config(name, round_, []))
        return our_loop(config(name, round_, VARIANTS[name]))

    order = ["baseline", *VARIANTS]
    rounds = []
    for round_ in range(args.rounds):
        shift = round_ % len(order)
        speeds = {name: tokens_per_s(name, round_) for name in order[shift:] + order[:shift]}
        rounds.append(speeds)
        print(f"round {round_}: " + ", ".join(f"{k} {v:,.0f}" for k, v in speeds.items())
              + " tokens/s", flush=True)  # fmt: skip
    result: dict[str, Any] = {
        "baseline_tokens_per_s": statistics.median(r["baseline"] for r in rounds),
        "method": f"median over {args.rounds} rounds, each running the baseline and the "
        "variants in an order rotated from round to round",
        "steps": args.steps,
        "checkpoint_every": 100,
        "overrides": args.overrides,
        "rounds": rounds,
    }
    for name in VARIANTS:
        result[name] = {
            "tokens_per_s": statistics.median(r[name] for r in rounds),
            "overhead": statistics.median(r["baseline"] / r[name] - 1.0 for r in rounds),
        }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
