"""`msplit phonebook`: when to split, on facts: average fact accuracy against the split step.

Runs the experiment graph of configs/phonebook.yaml on this machine: two books of random
facts with a controlled overlap are the corpus and its two clusters; each total budget T is
spent as a trunk on both books for s tokens and two branches, one per book, of (T - s) / 2
tokens each; each book is scored by its own specialist (exact greedy recall of every fact)
and the two accuracies averaged; the baseline is the mixture alone for T tokens. Finished
runs are skipped, so a rerun resumes. Ends with OUT/report.md, which states whether each of
the method's findings holds, and OUT/recall.png (one panel per overlap).

The report (``write_report``, the graph's report node) reads only the results table:
``results/phonebook.csv`` has one row per (overlap, T, s, seed) with each book's accuracy
under its specialist, their average and the baseline's.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from laws.plots import human

EXPERIMENT = Path(__file__).resolve().parent.parent / "configs" / "phonebook.yaml"
COLUMNS = ("overlap", "budget", "split_tokens", "split_fraction", "seed", "recall_a", "recall_b",
           "average", "baseline")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from slurm.cli import run_and_report

    example = "'seeds=[1]' 'sweep={data.phonebook.overlap: [0.0]}' 'budgets=[983040]'"
    return run_and_report(argv, "msplit phonebook", __doc__, EXPERIMENT, "runs/phonebook", example)


# ---- the table ---------------------------------------------------------------------------
def recall_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (overlap, T, s, seed) from the experiment's results table: each book's
    accuracy under its own specialist, their average, and the baseline's average (the
    mixture alone for T tokens) at the same (overlap, T, seed)."""
    specialist: dict[tuple, dict[int, float]] = defaultdict(dict)
    baseline: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r.get("fact_recall") is None:
            continue
        key = (r.get("overlap", 0.0), r["budget"], r["seed"])
        split = r["split_tokens"] or 0  # none: from scratch
        if r["arm"] == "specialist" and r["model"] == f"branch_{r['cluster']}":
            specialist[(*key, split)][r["cluster"]] = r["fact_recall"]
        elif r["arm"] == "standard" and split == 0:
            baseline[key][r["cluster"]] = r["fact_recall"]
    table = []  # clustered by label, sorted: cluster 0 holds book a, cluster 1 book b
    for (overlap, budget, seed, split), books in sorted(specialist.items()):
        base = baseline.get((overlap, budget, seed))
        table.append({
            "overlap": overlap, "budget": budget, "split_tokens": split,
            "split_fraction": split / budget, "seed": seed,
            "recall_a": books[0], "recall_b": books[1], "average": (books[0] + books[1]) / 2,
            "baseline": sum(base.values()) / len(base) if base else None,
        })  # fmt: skip
    return table


# ---- findings ----------------------------------------------------------------------------
# A difference counts when it exceeds this (one fact in a hundred) and the seeds' spread of
# both values compared.
RESOLUTION = 0.01


@dataclass
class Curve:
    """Average accuracy against the split step s for one (overlap, T), over seeds; its last
    point, s = T, is no split (the mixture alone for T tokens) when the baseline ran."""

    overlap: float
    budget: int
    fractions: list[float]  # s / T
    mean: list[float]
    spread: list[float]  # standard deviation over seeds (0 with one seed)
    per_seed_at_zero: list[float]

    @property
    def sufficient(self) -> bool:
        """The method's rule: splitting at step 0 recalls every fact (every seed)."""
        return all(value == 1.0 for value in self.per_seed_at_zero)

    def best(self, among: range | None = None) -> int:
        """Index of the best split step (the earliest of equals)."""
        return max(among or range(len(self.mean)), key=lambda i: (self.mean[i], -i))

    def beats(self, i: int, j: int) -> float:
        """How far point i is above point j beyond the noise (<= 0: not beyond it)."""
        noise = max(self.spread[i], self.spread[j], RESOLUTION)
        return self.mean[i] - self.mean[j] - noise

    def at(self, i: int) -> str:
        f = self.fractions[i]
        where = "no split" if f == 1.0 else "s = 0" if f == 0 else f"s = {f:g} T"
        return f"{where}: {self.mean[i]:.3f} ± {self.spread[i]:.3f}"


def curves(table: list[dict[str, Any]]) -> list[Curve]:
    groups: dict[tuple, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        groups[(row["overlap"], row["budget"])][row["split_fraction"]].append(row)
    made = []
    for (overlap, budget), by_fraction in sorted(groups.items()):
        fractions = sorted(by_fraction)
        averages = [[r["average"] for r in by_fraction[f]] for f in fractions]
        baselines = [r["baseline"] for r in by_fraction[fractions[0]] if r["baseline"] is not None]
        if baselines:  # no split: the split step at the end of the budget
            fractions, averages = [*fractions, 1.0], [*averages, baselines]
        made.append(Curve(overlap, budget, fractions, [statistics.fmean(a) for a in averages],
                          [_spread(a) for a in averages], averages[0]))  # fmt: skip
    return made


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _holds(holds: bool) -> str:
    return "**holds**" if holds else "**does not hold**"


def findings(made: list[Curve]) -> list[str]:
    """Whether each of the method's phonebook findings holds here, with its numbers."""
    lines = []
    for c in made:
        last = len(c.mean) - 1
        name = f"overlap {c.overlap:g}, T = {human(c.budget)}"
        if c.sufficient:  # no split step beats splitting at 0 beyond the noise
            best = c.best()
            verdict = _holds(c.beats(best, 0) <= 0)
            lines.append(f"- {name} (sufficient): splitting early is as good as any: {verdict} "
                         f"({c.at(0)}; best {c.at(best)})")  # fmt: skip
        else:  # the best interior step beats both ends beyond the noise
            inner = c.best(range(1, last))
            verdict = _holds(c.beats(inner, 0) > 0 and c.beats(inner, last) > 0)
            lines.append(f"- {name} (limited): the best split step is interior: {verdict} (best "
                         f"interior {c.at(inner)}; ends {c.at(0)}, {c.at(last)})")  # fmt: skip
    for budget in sorted({c.budget for c in made}):
        group = sorted((c for c in made if c.budget == budget), key=lambda c: c.overlap)
        if len(group) < 2 or any(c.sufficient for c in group):
            continue
        # the best step never moves earlier, and at the largest overlap its best beats the
        # smallest overlap's best step beyond the noise
        best = [c.best() for c in group]
        steps = [c.fractions[i] for c, i in zip(group, best, strict=True)]
        last = group[-1]
        before = last.fractions.index(steps[0])  # the smallest overlap's best step
        moved = last.beats(best[-1], before) > 0
        holds = all(b >= a for a, b in zip(steps, steps[1:], strict=False)) and moved
        cells = "; ".join(
            f"overlap {c.overlap:g}: best {c.at(i)}" for c, i in zip(group, best, strict=True)
        )
        lines.append(f"- T = {human(budget)} (limited at every overlap): more overlap moves the "
                     f"best split later: {_holds(holds)} ({cells}; at overlap "
                     f"{last.overlap:g}, {last.at(before)})")  # fmt: skip
    return lines


# ---- the plot ----------------------------------------------------------------------------
def plot_recall(made: list[Curve], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    overlaps = sorted({c.overlap for c in made})
    fig, axes = plt.subplots(1, len(overlaps), figsize=(4.6 * len(overlaps), 3.9), squeeze=False)
    for ax, overlap in zip(axes[0], overlaps, strict=True):
        for curve in (c for c in made if c.overlap == overlap):
            label = f"T = {human(curve.budget)} ({'sufficient' if curve.sufficient else 'limited'})"
            low = [m - s for m, s in zip(curve.mean, curve.spread, strict=True)]
            high = [m + s for m, s in zip(curve.mean, curve.spread, strict=True)]
            line = ax.plot(curve.fractions, curve.mean, "o-", label=label)[0]
            ax.fill_between(curve.fractions, low, high, color=line.get_color(), alpha=0.2)
        ax.set(xlabel="split step s / T (1: no split, the mixture alone)",
               ylabel="fact accuracy, average of the two books", xlim=(-0.04, 1.04),
               ylim=(-0.02, 1.02), title=f"overlap {overlap:g}")  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Phonebook (bands: ±1 sd over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the report --------------------------------------------------------------------------
def write_report(root: Path) -> Path:
    from megatron_split.checkpoint.checkpointer import write_atomic
    from slurm.report import csv_text, read_table, wall_time

    table = recall_rows(read_table(root / "results" / "results.parquet"))
    write_atomic(root / "results" / "phonebook.csv", csv_text(table, COLUMNS))
    made = curves(table)
    seeds = sorted({r["seed"] for r in table})
    image = plot_recall(made, root / "recall.png")
    lines = ["# Phonebook: when to split", "",
             "Two books of random facts (a share `overlap` of book b's facts also in book a). "
             "A budget of T tokens is a trunk on both books for s tokens, then one branch per "
             "book for (T - s) / 2 tokens; the accuracy is each book's facts recalled exactly "
             "by its own specialist, averaged over the two books; no split is the mixture "
             f"alone for T tokens. Mean ± standard deviation over {len(seeds)} seeds "
             f"({', '.join(map(str, seeds))}). A budget is sufficient when splitting at step 0 "
             "recalls every fact for every seed, limited otherwise.", "",
             "## Findings", "",
             f"A difference counts when it exceeds {RESOLUTION} (one fact in a hundred) and the "
             "seeds' spread of both values compared; s = T is no split.", "", *findings(made),
             "",
             f"![average accuracy against the split step]({image.relative_to(root)})", "",
             "## Average accuracy", "",
             "| overlap | T | budget | " + " | ".join(
                 "no split" if f == 1.0 else f"s = {f:g} T" for f in made[0].fractions) + " |",
             "|---|---|---|" + "---|" * len(made[0].fractions)]  # fmt: skip
    for c in made:
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(c.mean, c.spread, strict=True)]
        kind = "sufficient" if c.sufficient else "limited"
        lines.append(f"| {c.overlap:g} | {human(c.budget)} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", "Every (overlap, T, s, seed), each book under its own specialist: "
              "`results/phonebook.csv`; every model on every cluster: `results/results.csv`.",
              "", *wall_time(root / "experiment.json")]  # fmt: skip
    path = root / "report.md"
    write_atomic(path, "\n".join(lines))
    return path


if __name__ == "__main__":
    sys.exit(main())
