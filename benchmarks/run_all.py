"""Run every CPU benchmark and write its JSON under --out (``make bench``).

Each benchmark measures against a baseline in the same run and writes its own JSON; this
script only runs them one after the other (they must not compete for the cores) and prints
a one-line summary of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
# (script, result file, headline keys)
BENCHMARKS = [
    ("train_overhead.py", "train_overhead.json", ("ours", "ours_async_checkpoints")),
    ("prep_throughput.py", "prep_throughput.json", ("speedup_vs_baseline", "fraction_of_limit")),
    ("cluster_quality.py", "cluster_quality.json", ("nmi_minilm", "nmi_tfidf")),
    ("laws_fit.py", "laws_fit.json", ("fit_seconds_500pts", "recovered_max_rel_err")),
    (
        "eval_throughput.py",
        "eval_throughput.json",
        ("speedup_vs_baseline", "generation_speedup_vs_baseline", "max_abs_logprob_diff"),
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--only", nargs="*", help="script names to run (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for script, result, keys in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        if not (HERE / script).exists():
            print(f"{script}: not present, skipped")
            continue
        print(f"== {script}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), "--json", str(out / result)])
        if proc.returncode != 0:
            failed.append(script)
            continue
        data = json.loads((out / result).read_text())
        print(f"   {', '.join(f'{k}={data.get(k)}' for k in keys)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
