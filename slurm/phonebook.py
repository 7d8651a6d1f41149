"""`msplit phonebook`: when to split, on facts: recall of book b against the split step.

Two phonebooks (data_prep.phonebook) are two clusters of random facts, with a controlled
overlap. For each total budget T (training steps) and each split fraction f, a trunk trains
on the mixture of both books for s = f*T steps, then a branch continues on book b alone for
the remaining T - s steps (f = 0: book b alone from scratch; f = 1: the mixture alone). The
result is the share of book b's facts (and book a's) recalled exactly by greedy decoding,
against f, one curve per budget: with a limited budget splitting early pays, with a
sufficient one the split step matters less.

The trunk is one run of max(T) steps at a constant learning rate, keeping a checkpoint at
every split step, so every (T, s) shares its first s steps. Every stage is skipped when its
output is complete: a rerun resumes. Writes results.json and recall.png under --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from megatron_split.config import load_config

log = logging.getLogger("msplit.phonebook")
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Runs at a constant LR: a trunk checkpoint at step s is the same for every budget.
RUN_OVERRIDES = [
    "optim.schedule.kind=constant",
    "optim.schedule.warmup_steps=10",
    "train.eval_every=0",
    "train.log_every=50",
    "checkpoint.every=0",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msplit phonebook",
        description=__doc__.split("\n\n")[0],
        epilog="Extra dotted.key=value arguments override the run config (configs/tiny.yaml).",
    )
    parser.add_argument("--out", default="runs/phonebook", help="where every stage writes")
    parser.add_argument("--entries", type=int, default=100, help="facts per book")
    parser.add_argument("--overlap", type=float, default=0.0, help="share of b also in a")
    parser.add_argument("--repeats", type=int, default=8, help="documents per fact")
    parser.add_argument(
        "--budgets", type=_numbers(int), default=[250, 400], help="total steps, comma-separated"
    )
    parser.add_argument(
        "--fractions", type=_numbers(float), default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="split steps as fractions of each budget, comma-separated",
    )  # fmt: skip
    parser.add_argument("--config", default=str(REPO_CONFIGS / "tiny.yaml"), help="run config")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value for the run config")
    return parser.parse_args(argv)


def _numbers(kind: type):
    def parse(text: str) -> list:
        return [kind(x) for x in text.split(",") if x.strip()]

    return parse


def split_steps(budget: int, fractions: list[float]) -> list[int]:
    return sorted({round(f * budget) for f in fractions})


def main(argv: list[str] | None = None) -> int:
    from data_prep.phonebook import PhonebookConfig, write_phonebook
    from eval.facts import fact_recall
    from eval.lm import CheckpointLM
    from megatron_split.branching import branch_overrides, trunk_overrides
    from megatron_split.checkpoint import step_dir_name
    from megatron_split.data.clusters import ClusterDataConfig
    from megatron_split.train.config import RunConfig
    from megatron_split.train.loop import Trainer
    from megatron_split.train_cli import setup_logging
    from slurm.executors import run_local
    from slurm.experiment import DataStage
    from slurm.graph import Graph

    args = parse_args(argv)
    setup_logging(rank=0)
    out = Path(args.out)
    data = out / "data"
    books = [str(data / "book_a.jsonl"), str(data / "book_b.jsonl")]

    if not (data / "facts.json").is_file():
        write_phonebook(PhonebookConfig(str(data), args.entries, args.overlap, args.repeats))
    # The books are the clusters: the data nodes of the experiment graph, clustered by label.
    prepare = DataStage(inputs=books, vocab_size=512, label_key="book", by_label=True, k=2)
    states = run_local(Graph(prepare.nodes(out), out))
    if any(state.endswith("failed") for state in states.values()):
        raise SystemExit(f"msplit phonebook: data preparation failed: {states}")
    clusters_dir = out / "clusters"
    clusters = ClusterDataConfig(str(clusters_dir)).build()
    book_b = _cluster_of(clusters.manifest, "b")
    facts = json.loads((data / "facts.json").read_text())["facts"]
    facts_of = {book: [f for f in facts if book in f["books"]] for book in ("a", "b")}

    def config(overrides: list[str]) -> RunConfig:
        return load_config(RunConfig, args.config, [*RUN_OVERRIDES, *args.overrides, *overrides])

    every_split = sorted({s for t in args.budgets for s in split_steps(t, args.fractions)} - {0})
    trunk = config([*trunk_overrides(clusters_dir, out / "trunk"),
                    f"train.steps={max(args.budgets)}",
                    f"checkpoint.keep_steps={json.dumps(every_split)}"])  # fmt: skip
    log.info("[trunk] %d steps on both books, kept at %s", trunk.train.steps, every_split)
    Trainer(trunk).run()

    results: dict[str, dict[str, dict[str, float]]] = {}
    for budget in args.budgets:
        for split in split_steps(budget, args.fractions):
            run = out / "runs" / f"T{budget}_s{split}"
            if split == budget:  # no branch: the mixture alone
                checkpoint = out / "trunk" / "checkpoints" / step_dir_name(split)
            else:  # split == 0: no trunk, book b alone from scratch
                parent = out / "trunk" / "checkpoints" / step_dir_name(split) if split else None
                if parent is not None and not parent.is_dir():
                    raise SystemExit(
                        f"msplit phonebook: {parent} is missing: the trunk was trained for "
                        f"other budgets or fractions; remove {out / 'trunk'} to retrain it"
                    )
                steps = budget - split
                warmup = f"optim.schedule.warmup_steps={max(1, steps // 10)}"
                overrides = [warmup, *branch_overrides(clusters_dir, book_b, parent, run, steps)]
                log.info("[T=%d, split at %d] %d steps on book b", budget, split, budget - split)
                Trainer(config(overrides)).run()
                checkpoint = run
            lm = CheckpointLM.load(checkpoint)
            recall = {f"recall_{book}": fact_recall(lm, facts_of[book]) for book in ("a", "b")}
            results.setdefault(str(budget), {})[str(split)] = recall
            log.info("[T=%d, split at %d] %s", budget, split, recall)

    (out / "results.json").write_text(json.dumps({"budgets": results}, indent=2) + "\n")
    plot_recall(results, out / "recall.png")
    print("\nrecall of book b's facts (book a's in brackets), by split step")
    for budget, by_split in results.items():
        cells = [f"s={s}: {r['recall_b']:.2f} ({r['recall_a']:.2f})" for s, r in by_split.items()]
        print(f"T={budget:>5}  " + "  ".join(cells))
    print(f"\nwritten: {out / 'results.json'}, {out / 'recall.png'}")
    return 0


def _cluster_of(manifest: dict, label: str) -> int:
    for index, cluster in enumerate(manifest["clusters"]):
        if label in cluster.get("labels", {}):
            return index
    raise ValueError(f"no cluster holds the documents labelled {label!r}")


def plot_recall(results: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for budget, by_split in results.items():
        fraction = [int(s) / int(budget) for s in by_split]
        line = ax.plot(fraction, [r["recall_b"] for r in by_split.values()], "o-",
                       label=f"book b, T={budget}")  # fmt: skip
        ax.plot(fraction, [r["recall_a"] for r in by_split.values()], "x--",
                color=line[0].get_color(), alpha=0.5, label=f"book a, T={budget}")  # fmt: skip
    ax.set_xlabel("split step / budget (0: book b only, 1: mixture only)")
    ax.set_ylabel("facts recalled (exact, greedy)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Phonebook: recall against the split step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
