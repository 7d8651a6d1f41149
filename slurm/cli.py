"""`msplit experiment`: a split experiment as one graph, from the corpus to the law.

    msplit experiment plan EXPERIMENT.yaml [dotted.key=value ...] [--flops-per-gpu F]
    msplit experiment run EXPERIMENT.yaml [dotted.key=value ...]      # on this machine
    msplit experiment submit EXPERIMENT.yaml [dotted.key=value ...] [--wait]   # on Slurm
    msplit experiment submit EXPERIMENT.yaml --dry-run DIR    # the sbatch scripts only
    msplit experiment status EXPERIMENT.yaml [dotted.key=value ...]
    msplit experiment cancel EXPERIMENT.yaml [--node NAME ...]   # and the nodes after them

`plan` prints every node with its job, tokens, FLOPs and the checkpoints it keeps, and the
totals per arm (with --flops-per-gpu or --tokens-per-s, times and GPU-hours). `run`
executes the graph here in dependency order; `submit` sends it to Slurm as job arrays
chained by afterok. Both skip what is complete, so the same command resumes after a failure
or an interruption. See slurm/experiment.py and configs/demo.yaml for the file's fields.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

from data_prep.arguments import positive_float
from megatron_split.config import ConfigError, load_config
from megatron_split.train.metrics import format_duration
from megatron_split.train_cli import setup_logging
from slurm.graph import Graph, Training
from slurm.launch import SlurmConfig

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
        speed = parser.add_mutually_exclusive_group()
        speed.add_argument("--flops-per-gpu", type=positive_float, metavar="F",
                           help="achieved FLOP/s of one GPU (of one process, in a job without "
                           "GPUs), e.g. 4e14 for an H100 at 40%% MFU: adds each node's time "
                           "from its runs' FLOPs and its job's devices, and GPU-hours")  # fmt: skip
        speed.add_argument("--tokens-per-s", type=positive_float, metavar="X",
                           help="one training throughput for every job: adds each node's "
                           "time from its tokens")  # fmt: skip
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
        typed = shlex.join([args.experiment, *args.overrides])  # how status's hints name it
        if args.action == "plan":
            print(plan_table(graph, args.tokens_per_s, args.flops_per_gpu))
        elif args.action == "run":
            states = run_local(graph)
            print(status_table(graph, typed))
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
            print(status_table(graph, typed))
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


def plan_table(
    graph: Graph, tokens_per_s: float | None = None, flops_per_device: float | None = None
) -> str:
    """Every node with its job, its tokens, FLOPs and kept checkpoints, and the totals per
    arm; with a speed (one throughput for every job, or FLOP/s per device, which scales with
    each run's size and its job's devices), each node's time, GPU-hours, the longest chain
    of jobs, and a warning for a job whose time limit and requeues cannot hold its run."""
    from laws.plots import human
    from slurm.experiment import STAGE_OF_ARM

    def seconds(run: Training, slurm: SlurmConfig) -> float:
        if flops_per_device:
            return run.flops / (flops_per_device * slurm.nodes * _devices_per_node(slurm))
        return run.tokens / tokens_per_s if tokens_per_s else 0.0

    timed = bool(tokens_per_s or flops_per_device)
    width = graph.name_width
    header = (f"{'node':<{width}} {'tasks':>5} {'job':>9} {'limit':>10} {'tokens':>9} "
              f"{'FLOPs':>9} {'ckpts':>5} {'disk':>9}")  # fmt: skip
    header += f" {'time':>8} {'GPU h':>8}" if timed else ""
    lines = [header, "-" * len(header)]
    per_arm: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    checkpoints = disk = 0
    finish: dict[str, float] = {}  # when each node ends, its jobs started as soon as allowed
    warnings = []
    for node in graph:
        runs, slurm = node.trainings, node.slurm
        took = [seconds(t, slurm) for t in runs]
        gpu_hours = sum(took) * slurm.nodes * slurm.gpus_per_node / 3600
        for t, run_seconds in zip(runs, took, strict=True):
            per_arm[t.arm][0] += t.tokens
            per_arm[t.arm][1] += t.flops
            per_arm[t.arm][2] += run_seconds * slurm.nodes * slurm.gpus_per_node / 3600
            allowed = slurm.timeout_min * 60 * (slurm.max_requeues + 1)
            if run_seconds > allowed:
                warnings.append(
                    f"warning: {node.name}: about {format_duration(run_seconds)} of training, more "
                    f"than {STAGE_OF_ARM[t.arm]}.slurm allows ({slurm.timeout_min} min x "
                    f"{slurm.max_requeues + 1} tries): raise timeout_min or max_requeues"
                )
        # array tasks run side by side: a node takes as long as its longest task
        finish[node.name] = max((finish[a] for a in node.after), default=0.0) + max(took, default=0)
        kept = sum(t.checkpoints for t in runs)
        size = sum(t.checkpoints * t.checkpoint_bytes for t in runs)
        checkpoints, disk = checkpoints + kept, disk + size
        tokens, flops = sum(t.tokens for t in runs), sum(t.flops for t in runs)
        cells = [f"{human(tokens):>9}", f"{flops:>9.3g}", f"{kept:>5}", f"{_bytes(size):>9}"]
        if not runs:
            cells = [f"{'-':>9}"] * 2 + [f"{'-':>5}", f"{'-':>9}"]
        tries = f" x{slurm.max_requeues + 1}" if runs and slurm.max_requeues else ""
        limit = format_duration(slurm.timeout_min * 60) + tries
        line = (f"{node.name:<{width}} {len(node.tasks):>5} {_job(slurm):>9} {limit:>10} "
                + " ".join(cells))  # fmt: skip
        if timed and runs:
            line += f" {format_duration(max(took)):>8} {gpu_hours:>8.1f}"
        lines.append(line)
    lines += ["", "per arm:"]
    for arm, (tokens, flops, hours) in [*per_arm.items(), ("total", _sums(per_arm))]:
        line = f"  {arm:<20} {human(tokens):>9} tokens {flops:>10.3g} FLOPs"
        lines.append(line + (f"  {hours:,.1f} GPU h" if timed else ""))
    lines.append(f"checkpoints kept: {checkpoints}, about {_bytes(disk)}")
    if timed:
        longest = format_duration(max(finish.values()))
        lines.append(f"training time on the longest chain of jobs: {longest} (array tasks "
                     "side by side; `run` here takes them in turn)")  # fmt: skip
    return "\n".join(lines + warnings)


def _devices_per_node(slurm: SlurmConfig) -> int:
    """What FLOP/s per device counts: GPUs, or the processes of a job without them."""
    return slurm.gpus_per_node or slurm.tasks_per_node


def _job(slurm: SlurmConfig) -> str:
    """``2x8 GPU``: nodes x GPUs per node (or x processes, without GPUs)."""
    kind = "GPU" if slurm.gpus_per_node else "CPU"
    return f"{slurm.nodes}x{_devices_per_node(slurm)} {kind}"


def _sums(per_arm: dict[str, list[float]]) -> list[float]:
    return [sum(values[i] for values in per_arm.values()) for i in range(3)]


def _bytes(size: float) -> str:
    for scale, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


if __name__ == "__main__":
    sys.exit(main())
