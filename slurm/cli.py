"""`msplit experiment`: a split experiment as one graph, from the corpus to the law.

    msplit experiment plan EXPERIMENT.yaml [dotted.key=value ...] [--tokens-per-s X]
    msplit experiment run EXPERIMENT.yaml [dotted.key=value ...]      # on this machine
    msplit experiment submit EXPERIMENT.yaml [dotted.key=value ...] [--wait]   # on Slurm
    msplit experiment submit EXPERIMENT.yaml --dry-run DIR    # the sbatch scripts only
    msplit experiment status EXPERIMENT.yaml [dotted.key=value ...]
    msplit experiment cancel EXPERIMENT.yaml [--node NAME ...]   # and the nodes after them

`plan` prints every node with its tokens, FLOPs and the checkpoints it keeps, and the
totals per arm (with --tokens-per-s, the wall time). `run` executes the graph here in
dependency order; `submit` sends it to Slurm as job arrays chained by afterok. Both skip
what is complete, so the same command resumes after a failure or an interruption. See
slurm/experiment.py and configs/demo.yaml for the file's fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from megatron_split.config import ConfigError, load_config
from megatron_split.train_cli import setup_logging

ACTIONS = {
    "plan": "print every node with its tokens, FLOPs and kept checkpoints, and the totals",
    "run": "run the graph on this machine in dependency order, skipping what is complete",
    "submit": "send the graph to Slurm as job arrays chained by afterok",
    "status": "print every node's state (complete, queued, running, failed, ...)",
    "cancel": "cancel the Slurm jobs of nodes and of the nodes after them",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ACTIONS:  # the overview, or an error listing the actions
        parser = argparse.ArgumentParser(
            prog="msplit experiment",
            description=__doc__.split("\n\n")[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=__doc__.split("\n\n", 1)[1],
        )
        parser.add_argument("action", choices=ACTIONS, help="; ".join(
            f"{name}: {what}" for name, what in ACTIONS.items()))  # fmt: skip
        parser.parse_args(argv[:1])
    return _action_parser(argv[0]).parse_intermixed_args(argv[1:])


def _action_parser(action: str) -> argparse.ArgumentParser:
    """One action's options (none of another's), overrides anywhere among them."""
    parser = argparse.ArgumentParser(prog=f"msplit experiment {action}",
                                     description=f"{ACTIONS[action]}.")  # fmt: skip
    parser.set_defaults(action=action)
    parser.add_argument("experiment", help="experiment YAML (see configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the file")
    if action == "plan":
        parser.add_argument("--tokens-per-s", type=float,
                            help="training throughput: adds each node's wall time")  # fmt: skip
    elif action == "submit":
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--wait", action="store_true", help="then wait for every job")
        mode.add_argument("--dry-run", metavar="DIR", help="write every node's sbatch script "
                          "and the graph under DIR, submit nothing")  # fmt: skip
    elif action == "cancel":
        parser.add_argument("--node", action="append", metavar="NAME", help="this node's jobs "
                            "and its dependents' (repeatable; default: every node)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    from slurm.executors import (
        cancel_slurm,
        require_slurm,
        run_local,
        submit_slurm,
        write_sbatch_scripts,
    )
    from slurm.experiment import ExperimentConfig, build_graph
    from slurm.status import status_table

    args = parse_args(argv)
    setup_logging(rank=0)
    try:
        graph = build_graph(load_config(ExperimentConfig, args.experiment, args.overrides))
        if args.action == "plan":
            print(plan_table(graph, args.tokens_per_s))
        elif args.action == "run":
            states = run_local(graph)
            print(status_table(graph))
            left = {
                "failed (see the log above)": [n for n, s in states.items() if s == "failed"],
                "interrupted (rerun to resume)": [
                    n for n, s in states.items() if s == "interrupted"
                ],
                "not run": [
                    n.name
                    for n in graph
                    if states.get(n.name, "dependency failed") == "dependency failed"
                ],  # fmt: skip
            }
            if any(left.values()):
                for what, names in left.items():
                    if names:
                        print(f"msplit experiment: {what}: {', '.join(names)}", file=sys.stderr)
                return 1
        elif args.action == "submit" and args.dry_run:
            scripts = write_sbatch_scripts(graph, Path(args.dry_run))
            graph_file = Path(args.dry_run) / "graph.json"
            graph_file.write_text(json.dumps({n.name: n.after for n in graph}, indent=2) + "\n")
            print(f"{len(scripts)} sbatch scripts and {graph_file.name} under {args.dry_run}")
        elif args.action == "submit":
            require_slurm()
            ids = submit_slurm(graph, wait=args.wait)
            if not ids:
                print("nothing to submit: every node is complete or still queued")
            for name, job_id in ids.items():
                print(f"{name:<32} {job_id}")
        elif args.action == "cancel":
            require_slurm()
            cancelled = cancel_slurm(graph, args.node)
            for name, job_id in cancelled.items():
                print(f"{name:<32} {job_id} cancelled")
            if not cancelled:
                print("nothing to cancel: no job of these nodes is queued or running")
        else:
            print(status_table(graph))
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        print(f"msplit experiment: {error}", file=sys.stderr)
        return 2
    return 0


def run_and_report(
    argv: list[str] | None, prog: str, doc: str, experiment: Path, out: str, example: str
) -> int:
    """``prog [--out DIR] [--experiment FILE] [key=value ...]``: run one shipped experiment
    file here and print its report (`msplit demo`, `msplit phonebook`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1]
        + f"\nExtra dotted.key=value arguments override the experiment file, e.g. {example}.",
    )
    parser.add_argument("--out", "--output", default=out,
                        help="where every node writes (default: %(default)s)")  # fmt: skip
    parser.add_argument("--experiment", default=str(experiment),
                        help="the experiment file (default: %(default)s)")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="dotted.key=value of the experiment")
    args = parser.parse_intermixed_args(argv)
    code = main(["run", args.experiment, f"out={args.out}", *args.overrides])
    report = Path(args.out) / "report.md"
    if code == 0 and report.is_file():
        print("\n" + report.read_text())
    return code


def plan_table(graph, tokens_per_s: float | None = None) -> str:
    """Every node with its tokens, FLOPs and kept checkpoints, and the totals per arm."""
    from laws.plots import human

    width = graph.name_width
    header = f"{'node':<{width}} {'tasks':>5} {'tokens':>9} {'FLOPs':>9} {'ckpts':>5} {'disk':>9}"
    lines = [header + (f" {'time':>8}" if tokens_per_s else ""), "-" * len(header)]
    per_arm: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    checkpoints = disk = 0
    for node in graph:
        runs = node.trainings
        tokens = sum(t.tokens for t in runs)
        flops = sum(t.flops for t in runs)
        kept = sum(t.checkpoints for t in runs)
        size = sum(t.checkpoints * t.checkpoint_bytes for t in runs)
        for t in runs:
            per_arm[t.arm][0] += t.tokens
            per_arm[t.arm][1] += t.flops
        checkpoints, disk = checkpoints + kept, disk + size
        cells = [f"{human(tokens):>9}", f"{flops:>9.3g}", f"{kept:>5}", f"{_bytes(size):>9}"]
        if not runs:
            cells = [f"{'-':>9}"] * 2 + [f"{'-':>5}", f"{'-':>9}"]
        line = f"{node.name:<{width}} {len(node.tasks):>5} " + " ".join(cells)
        if tokens_per_s and runs:
            line += f" {_duration(tokens / tokens_per_s):>8}"
        lines.append(line)
    lines += ["", "per arm:"]
    for arm, (tokens, flops) in per_arm.items():
        line = f"  {arm:<20} {human(tokens):>9} tokens {flops:>10.3g} FLOPs"
        lines.append(line + (f"  {_duration(tokens / tokens_per_s)}" if tokens_per_s else ""))
    total_tokens = sum(v[0] for v in per_arm.values())
    total_flops = sum(v[1] for v in per_arm.values())
    lines.append(
        f"  {'total':<20} {human(total_tokens):>9} tokens {total_flops:>10.3g} FLOPs"
        + (f"  {_duration(total_tokens / tokens_per_s)}" if tokens_per_s else "")
    )
    lines.append(f"checkpoints kept: {checkpoints}, about {_bytes(disk)}")
    return "\n".join(lines)


def _bytes(size: float) -> str:
    for scale, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


if __name__ == "__main__":
    sys.exit(main())
