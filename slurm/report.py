"""The experiment's results table and report: split against standard at equal compute.

    python -m slurm.report table --root OUT --out OUT/results --eval OUT/split_400/eval ...
    python -m slurm.report write --root OUT --k 4
    python -m slurm.report publish --root OUT --to benchmarks/results/NAME

``table`` gathers every evaluation of the experiment into one table, one row per (run,
cluster): the run, its arm (trunk, specialist, standard, standard_per_model), its family
(the split point it belongs to), N (non-embedding and total), D, D', the tokens evaluated,
the held-out loss and perplexity; as ``results.parquet`` and ``results.csv``, and the rows
a law is fitted to as ``law_points.csv`` (annealed checkpoints only).

``publish`` copies what a reader needs of an experiment (the report and its plots, the
tables, the law and its report, the nodes' states and times; no checkpoints) to a folder
of the same layout, e.g. benchmarks/results/repro_small for `make repro`.

``write`` turns it into ``OUT/report.md`` with plots under ``OUT/report/``: per family,
the trunk, the standard arm (k D' tokens) and the split family (each cluster scored by its
own specialist) at equal compute D + k D'; from which budget on split beats standard; and,
when the graph fitted a law (``OUT/laws``), its held-out extrapolation and what it says
about the optimal split, each stated with its numbers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from laws.plots import human

COLUMNS = ("family", "run", "step", "model", "arm", "cluster", "split_tokens", "N", "N_total", "D",
           "D_prime", "tokens_evaluated", "loss", "perplexity", "annealed",
           "fact_recall")  # fmt: skip
ARMS = ("trunk", "standard", "specialist", "standard_per_model")
MRE_BAR = 0.02  # the mean relative error a law must reach on the held-out largest size


# ---- the table ---------------------------------------------------------------------------
def gather(root: Path, evals: list[Path]) -> list[dict[str, Any]]:
    """One row per (run, cluster) of every evaluation: each model on each held-out set, with
    its fact recall where facts were evaluated, and its family's tags (seed, budget, ...)."""
    rows = []
    for directory in evals:
        family = str(directory.parent.relative_to(root))
        results = [
            json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()
        ]
        recall = {(r["run"], r["cluster"]): r["value"] for r in results
                  if r["eval"] == "facts" and r["metric"] == "recall"}  # fmt: skip
        for r in results:
            if r["eval"] != "heldout" or r["metric"] != "loss":
                continue
            checkpoint = Path(r["run"])
            rows.append({
                "family": family, **r.get("tags", {}),
                "run": str(checkpoint.parent.parent.relative_to(root)),
                "step": r["step"], "model": r["model"], "arm": r["arm"], "cluster": r["cluster"],
                "split_tokens": r["split_tokens"] if r["arm"] != "trunk" else r["D"],
                "N": r["N"], "N_total": r["N_total"], "D": r["D"], "D_prime": r["D_prime"],
                "tokens_evaluated": r["tokens"], "loss": r["value"],
                "perplexity": math.exp(r["value"]), "annealed": r["annealed"],
                "fact_recall": recall.get((r["run"], r["cluster"])),
            })  # fmt: skip
    return rows


def law_point_rows(root: Path, evals: list[Path]) -> list[dict[str, Any]]:
    """Every evaluation's law points (eval.family.law_points), runs named from ``root``."""
    rows = []
    for directory in evals:
        for line in (directory / "law_points.jsonl").read_text().splitlines():
            point = json.loads(line)
            rows.append({**point, "run": str(Path(point["run"]).relative_to(root))})
    return rows


def write_table(root: Path, evals: list[Path], out: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from megatron_split.checkpoint.checkpointer import write_atomic

    rows = gather(root, evals)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "results.parquet")
    tags = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in COLUMNS]
    write_atomic(out / "results.csv", csv_text(rows, ("family", *tags, *COLUMNS[1:])))
    points = law_point_rows(root, evals)  # written last: its presence means the table is done
    columns = ("N", "D", "D_prime", "loss", "domain", "run", "arm")
    write_atomic(out / "law_points.csv", csv_text(points, columns))
    return rows


def csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def read_table(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


# ---- equal compute -----------------------------------------------------------------------
def families(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Per family: each arm's mean held-out loss over the clusters (the specialist arm:
    each cluster scored by its own branch), and its compute in tokens."""
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    summary = []
    for family, members in by_family.items():
        per_arm: dict[str, dict[int, float]] = defaultdict(dict)
        for r in members:  # a specialist stands for its own cluster only
            if r["arm"] != "specialist" or r["model"] == f"branch_{r['cluster']}":
                per_arm[r["arm"]][r["cluster"]] = r["loss"]
        specialist = next(r for r in members if r["arm"] == "specialist")
        D, Dp = specialist["D"], specialist["D_prime"]  # the trunk tokens it continued
        record = {"family": family, "N": specialist["N"], "N_total": specialist["N_total"], "D": D,
                  "D_prime": Dp, "compute": D + k * Dp,
                  "per_cluster": {arm: per_arm[arm] for arm in ARMS if arm in per_arm}}  # fmt: skip
        for arm, losses in record["per_cluster"].items():
            record[arm] = sum(losses.values()) / len(losses)
        if "standard" in record:
            record["split_minus_standard"] = record["specialist"] - record["standard"]
        summary.append(record)
    return sorted(summary, key=lambda f: (f["N"], f["compute"], f["family"]))


def split_verdict(summary: list[dict[str, Any]]) -> list[str]:
    """Per model size: whether split beats standard at equal compute, and from which
    budget on (the smallest budget from which it wins at every larger one)."""
    lines = []
    for n in sorted({f["N"] for f in summary}):
        points = [(f["compute"], f["split_minus_standard"]) for f in summary
                  if f["N"] == n and "split_minus_standard" in f]  # fmt: skip
        if not points:
            continue
        wins = [c for c, d in points if d < 0]
        cells = ", ".join(f"{human(c)}: {d:+.3f}" for c, d in points)
        if len(wins) == len(points):
            verdict = f"split beats standard at every budget measured (from {human(points[0][0])})"
        elif not wins:
            verdict = "standard beats split at every budget measured"
        else:
            first = next((c for i, (c, _) in enumerate(points)
                          if all(d < 0 for _, d in points[i:])), None)  # fmt: skip
            verdict = (
                f"split beats standard from {human(first)} tokens on"
                if first is not None
                else f"mixed: split wins at {', '.join(human(c) for c in wins)}"
            )
        lines.append(f"- N = {human(n)}: {verdict} (split − standard, nats: {cells})")
    return lines


def plot_equal_compute(summary: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({f["N"] for f in summary})
    cmap = plt.get_cmap("viridis")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, n in enumerate(sizes):
        color = cmap(i / max(len(sizes) - 1, 1) * 0.9)
        group = [f for f in summary if f["N"] == n]
        compute = [f["compute"] for f in group]
        left.plot(compute, [f["specialist"] for f in group], "o-", color=color,
                  label=f"split, N={human(n)}")  # fmt: skip
        if all("standard" in f for f in group):
            left.plot(compute, [f["standard"] for f in group], "s--", color=color, alpha=0.7,
                      label=f"standard, N={human(n)}")  # fmt: skip
            right.plot(compute, [f["split_minus_standard"] for f in group], "o-", color=color,
                       label=f"N={human(n)}")  # fmt: skip
    left.set(xscale="log", xlabel="compute D + k D' (tokens)",
             ylabel="mean held-out loss over clusters (nats)",
             title="Split vs standard at equal compute")  # fmt: skip
    left.legend(fontsize=7)
    right.axhline(0.0, color="grey", lw=1)
    right.set(xscale="log", xlabel="compute D + k D' (tokens)",
              ylabel="split − standard (nats; < 0: split wins)", title="Difference")  # fmt: skip
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_cluster(summary: list[dict[str, Any]], k: int, path: Path) -> Path:
    """Per family, each cluster's held-out loss under each arm, as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(summary), figsize=(4.5 * len(summary) + 1, 3.8), squeeze=False)
    for ax, family in zip(axes[0], summary, strict=True):
        arms = [arm for arm in ARMS if arm in family["per_cluster"]]
        width = 0.8 / len(arms)
        for i, arm in enumerate(arms):
            losses = [family["per_cluster"][arm].get(c, np.nan) for c in range(k)]
            ax.bar(np.arange(k) + (i - (len(arms) - 1) / 2) * width, losses, width, label=arm)
        ax.set(xticks=range(k), xticklabels=[f"cluster {c}" for c in range(k)],
               ylabel="held-out loss (nats)",
               title=f"{family['family']}: compute {human(family['compute'])} tokens")  # fmt: skip
        low = min(min(v.values()) for v in family["per_cluster"].values())
        ax.set_ylim(bottom=low - 0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the law -----------------------------------------------------------------------------
def law_section(laws: Path, root: Path) -> list[str]:
    fit_path, curves_path = laws / "fit.json", laws / "report" / "curves.json"
    if not fit_path.is_file():
        return []
    fit = json.loads(fit_path.read_text())
    images = laws.relative_to(root) / "report"
    lines = ["## The law L(N, D, D')", "",
             f"Fitted to {fit['n_points']} law points (`results/law_points.csv`: annealed "
             "runs only: each specialist on its own cluster, the standard arms on every "
             f"cluster). Chosen form: **{fit['form']}** (in-sample R^2 "
             f"{fit['r2']:.3f}).", ""]  # fmt: skip
    heldout = fit.get("heldout")
    if heldout:
        verdict = "meets" if heldout["mre"] <= MRE_BAR else "misses"
        caveat = ("" if fit.get("chosen_on") == "validation"
                  else ", on the rows that chose the form (not an independent test)")  # fmt: skip
        lines += [f"Held out ({heldout['split']}, {heldout['n_test']} points), fitted on the "
                  f"rest: R^2 {heldout['r2']:.3f}, mean relative error {heldout['mre']:.2%}, "
                  f"max error {heldout['max_err']:.3f} nats: it {verdict} the "
                  f"{MRE_BAR:.0%} bar{caveat}.", ""]  # fmt: skip
    if fit.get("selection"):
        lines += ["| form | params | fit R^2 | validation mean rel. err | held-out R^2 "
                  "| held-out mean rel. err | max err |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in fit["selection"]:
            v, h = row.get("validation") or {}, row.get("heldout") or {}
            cells = [f"{v['mre']:.4g}" if v else "-"]
            cells += [f"{h[key]:.4g}" if key in h else "-" for key in ("r2", "mre", "max_err")]
            lines.append(f"| {row['form']} | {row['n_params']} | {row.get('fit_r2', 0):.4g} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        lines += ["", _why_chosen(fit), ""]
    lines += [f"![predicted vs observed]({images}/predicted_vs_observed.png)", ""]
    if curves_path.is_file():
        lines += allocation_findings(json.loads(curves_path.read_text()), images)
    return lines


def trend(values: list[float], tolerance: float) -> str:
    """How a curve moves along its x: stays (its range within ``tolerance``), falls or rises
    from its first value to its last (no step back by more than ``tolerance``), or is not
    monotonic."""
    if max(values) - min(values) <= tolerance:
        return "stays"
    direction = 1.0 if values[-1] > values[0] else -1.0
    steps = [direction * (b - a) for a, b in zip(values, values[1:], strict=False)]
    if all(step >= -tolerance for step in steps):
        return "rises" if direction > 0 else "falls"
    return "is not monotonic"


def allocation_findings(curves: dict[str, Any], images: Path) -> list[str]:
    """What the law says of the optimal split, per N: how the optimal pretraining fraction
    and the optimal D move as the budget grows, and how D_split moves with N."""
    lines = ["### What the law says of the split", ""]
    for n, splits in curves["curves"].items():
        fractions = [s["fraction"] for s in splits]
        d_star = [s["D_star"] for s in splits]
        lines.append(
            f"- N = {human(float(n))}, budgets T = {human(splits[0]['budget'])} to "
            f"{human(splits[-1]['budget'])}: the optimal pretraining fraction "
            f"{trend(fractions, 0.01)} ({fractions[0]:.3f} -> {fractions[-1]:.3f}); the "
            f"optimal D {trend([math.log(d) for d in d_star], 1e-3)} "
            f"({human(d_star[0])} -> {human(d_star[-1])}); the compute multiplier "
            f"{splits[0]['multiplier']:.3g} -> {splits[-1]['multiplier']:.3g}"
        )
    d_split = [(float(n), v) for n, v in curves["d_split"].items()]
    cells = ", ".join(f"N={human(n)}: {'never' if v is None else human(v)}" for n, v in d_split)
    # laws.allocate probes D from 0.01 N: a D_split there means "pays from the start".
    floor = [v is not None and v <= 0.0101 * n for n, v in d_split]
    if all(floor):
        verdict = ("is the lowest D probed (0.01 N) at every N: the law has splitting pay from "
                   "the start, so its growth with N is the probe's, not a finding")  # fmt: skip
    elif any(v is None for _, v in d_split):
        verdict = "is never reached for some N (splitting never pays there)"
    else:
        ratios = [v / n for n, v in d_split]
        verdict = (f"{trend([math.log(v) for _, v in d_split], 1e-3)} with N, at "
                   f"{min(ratios):.3g} to {max(ratios):.3g} tokens per parameter")  # fmt: skip
    lines += ["", f"D_split {verdict} ({cells}).", ""]
    for title, image in (("optimal fraction vs budget", "optimal_fraction.png"),
                         ("D_split vs N", "d_split.png"),
                         ("compute multiplier vs budget", "multiplier.png")):  # fmt: skip
        lines += [f"![{title}]({images}/{image})", ""]
    return lines


# ---- the report --------------------------------------------------------------------------
def write_report(root: Path, k: int) -> Path:
    from megatron_split.checkpoint.checkpointer import write_atomic

    rows = read_table(root / "results" / "results.parquet")
    summary = families(rows, k)
    arms = [arm for arm in ARMS if any(arm in f for f in summary)]
    lines = ["# Split vs standard at equal compute", "",
             f"k = {k} clusters; each family is a trunk checkpoint at D tokens, its k "
             "specialists of D' tokens each (compute D + k D') and the standard arm: the "
             "same checkpoint continued on the mixture for k D' tokens. Losses are held-out "
             "nats per token, averaged over the clusters (the split family: each cluster "
             "scored by its own specialist). The trunk is shown at D, in its stable phase.",
             ""]  # fmt: skip
    header = ["family", "N", "D", "D'", "compute", *arms]
    lines += ["| " + " | ".join(header + (["split − standard"] if "standard" in arms else []))
              + " |", "|" + "---|" * (len(header) + ("standard" in arms)), ]  # fmt: skip
    for f in summary:
        cells = [
            f["family"],
            human(f["N"]),
            human(f["D"]),
            human(f["D_prime"]),
            human(f["compute"]),
            *(f"{f[arm]:.4f}" if arm in f else "-" for arm in arms),
        ]
        if "standard" in arms:
            cells.append(f"{f['split_minus_standard']:+.4f}" if "standard" in f else "-")
        lines.append("| " + " | ".join(cells) + " |")
    image = plot_equal_compute(summary, root / "report" / "equal_compute.png")
    lines += ["", f"![split vs standard]({image.relative_to(root)})", ""]
    if "standard" in arms:
        lines += ["### Does split beat standard at equal compute?", "", *split_verdict(summary), ""]
    if len(summary) <= 4:
        bars = plot_per_cluster(summary, k, root / "report" / "per_cluster.png")
        lines += ["### Per cluster", "", f"![per cluster]({bars.relative_to(root)})", ""]
        for f in summary:
            shown = [arm for arm in arms if arm in f["per_cluster"]]
            lines += [
                f"{f['family']} (compute {human(f['compute'])} tokens):",
                "",
                "| cluster | " + " | ".join(shown) + " |",
                "|---|" + "---|" * len(shown),
            ]
            for cluster in range(k):
                values = [f["per_cluster"][arm].get(cluster) for arm in shown]
                lines.append(f"| {cluster} | " + " | ".join(
                    "-" if v is None else f"{v:.4f}" for v in values) + " |")  # fmt: skip
            lines.append("")
    lines += law_section(root / "laws", root)
    lines += wall_time(root / "experiment.json")
    lines += ["Every row, per run and cluster: `results/results.csv` (and `.parquet`).", ""]
    path = root / "report.md"
    write_atomic(path, "\n".join(lines))
    return path


def wall_time(state: Path) -> list[str]:
    """The graph's time on this machine, from the executor's record of each node."""
    if not state.is_file():
        return []
    nodes = json.loads(state.read_text())["nodes"]
    seconds = sum(n.get("seconds", 0.0) for n in nodes.values() if n["state"] == "succeeded")
    return [f"Wall time of the graph's nodes on this machine: {seconds / 60:.0f} min "
            f"(`experiment.json`, the sum over {len(nodes)} nodes run).", ""]  # fmt: skip


# What a reader needs of an experiment, relative to its out directory.
PUBLISHED = ("report.md", "report/*.png", "recall.png", "results/results.csv",
             "results/results.parquet", "results/law_points.csv", "results/phonebook.csv",
             "laws/fit.json", "laws/report/*", "experiment.json")  # fmt: skip


def publish(root: Path, to: Path) -> list[Path]:
    import shutil

    copied = []
    for pattern in PUBLISHED:
        for path in sorted(root.glob(pattern)):
            target = to / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slurm.report", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="gather the evaluations into one table")
    table.add_argument("--root", required=True, help="the experiment's out directory")
    table.add_argument("--out", "--output", required=True, help="where the tables go")
    table.add_argument("--eval", action="append", required=True, help="an evaluation directory")
    write = commands.add_parser("write", help="write OUT/report.md from the table (and law)")
    write.add_argument("--root", required=True, help="the experiment's out directory")
    write.add_argument("--k", type=int, required=True, help="clusters")
    write.add_argument(
        "--kind",
        choices=["equal_compute", "phonebook"],
        default="equal_compute",
        help="split vs standard per family, or the phonebook's recall against the split step",
    )
    published = commands.add_parser("publish", help="copy the report, tables and law elsewhere")
    published.add_argument("--root", required=True, help="the experiment's out directory")
    published.add_argument("--to", required=True, help="the folder to copy them to")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()  # runs are named relative to it
    if args.command == "publish":
        copied = publish(root, Path(args.to))
        print(f"{len(copied)} files under {args.to}")
    elif args.command == "table":
        rows = write_table(root, [Path(e).resolve() for e in args.eval], Path(args.out))
        print(f"{len(rows)} rows: {Path(args.out) / 'results.csv'}")
    elif args.kind == "phonebook":
        from slurm.phonebook import write_report as write_phonebook_report

        print(f"written: {write_phonebook_report(root)}")
    else:
        print(f"written: {write_report(root, args.k)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


VALIDATION_SPLITS = {
    "largest-N": "the largest size among those the held-out fit is fitted on, predicted from "
    "the smaller ones",
    "largest-D": "the longest budgets among the rows the held-out fit is fitted on, predicted "
    "from the shorter ones",
}


def _why_chosen(fit: dict[str, Any]) -> str:
    """Which split chose the form, and what that makes of its held-out score."""
    if fit.get("chosen_on") == "aicc":
        return (f"{fit['form']} won: the lowest AICc of the forms compared, in sample (no "
                "held-out split: the law is not checked by extrapolation).")  # fmt: skip
    if fit.get("chosen_on") != "validation":
        return (f"{fit['form']} won: the lowest held-out mean relative error of the forms "
                "compared (too few sizes for a validation split, which needs three to fit, one "
                "to validate and one held out: the held-out score chose the form, and so is "
                "optimistic).")  # fmt: skip
    rows = [row for row in fit["selection"] if "heldout" in row]
    validation = next(row["validation"] for row in rows if row["form"] == fit["form"])
    text = (f"{fit['form']} won: the lowest mean relative error on the validation split "
            f"({VALIDATION_SPLITS[validation['split']]}, {validation['n_test']} points). The "
            "held-out rows never chose the form: its score above is an extrapolation it was "
            "not selected on.")  # fmt: skip
    best = min(rows, key=lambda row: row["heldout"]["mre"])
    if best["form"] != fit["form"]:
        rank = sorted(rows, key=lambda row: row["validation"]["mre"]).index(best) + 1
        text += (f" {best['form']} predicts the held-out rows best "
                 f"({best['heldout']['mre']:.2%}) but ranks {rank} of {len(rows)} on the "
                 "validation split: to pick it for that would be to choose on the test "
                 "set.")  # fmt: skip
    return text
