"""bf16 MFU of our training loop on one GPU: a ~0.9B-parameter GPT at sequence length 2048.

Each configuration runs in its own process (`python -m megatron_split.train_cli`) on a
synthetic shard with a GPT-2-sized vocabulary; MFU is read from the steady-state logging
window (model FLOPs per token from ModelConfig.flops_per_token, dense bf16 peak of the GPU).

    python benchmarks/gpu_mfu.py --json benchmarks/results/gpu_mfu.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from megatron_split.data.synthetic import write_synthetic_shard
from megatron_split.model import ModelConfig

MODEL = {
    "model.num_layers": 16,
    "model.hidden_size": 2048,
    "model.num_attention_heads": 16,
    "model.seq_length": 2048,
    "model.params_dtype": "bf16",
    "model.init_on_cpu": False,
    "model.attention": "auto",
}
MICRO_BATCHES = (2, 4, 8)


def run(work: Path, shard: str, micro_batch: int, steps: int) -> dict:
    run_dir = work / f"mb{micro_batch}"
    overrides = {
        **MODEL,
        "run_dir": str(run_dir),
        "data.paths": f"[{shard}]",
        "data.split": "100,0,0",
        "train.steps": steps,
        "train.global_batch": 4 * max(MICRO_BATCHES),
        "train.micro_batch": micro_batch,
        "train.log_every": 10,
        "train.eval_every": 0,
        "train.progress": False,
        "train.tensorboard": False,
        "checkpoint.save_at_end": False,
    }
    cmd = [sys.executable, "-m", "megatron_split.train_cli"] + [
        f"{k}={v}" for k, v in overrides.items()
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"micro_batch": micro_batch, "error": proc.stderr[-3000:]}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "tokens_per_s" in r][-1]  # steady state: the last window
    return {
        "micro_batch": micro_batch,
        "tokens_per_s": last["tokens_per_s"],
        "mfu": last.get("mfu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="msplit-mfu-"))
    shard = write_synthetic_shard(
        work / "shard", n_docs=200, vocab=50257, doc_length=(2000, 6000), successors=64
    )
    cfg = ModelConfig(vocab_size=50257, **{k.split(".", 1)[1]: v for k, v in MODEL.items()})
    counts = cfg.parameter_counts()
    results = [run(work, shard, mb, args.steps) for mb in MICRO_BATCHES]
    for r in results:
        print(json.dumps(r)[:400], flush=True)
    ok = [r for r in results if r.get("mfu") is not None]
    best = max(ok, key=lambda r: r["mfu"]) if ok else None
    summary = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops_per_token": cfg.flops_per_token(),
        "seq_length": cfg.seq_length,
        "attention": cfg.resolved_attention(),
        "runs": results,
        "best_mfu": best["mfu"] if best else None,
        "best_tokens_per_s": best["tokens_per_s"] if best else None,
        "target_mfu": 0.40,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
