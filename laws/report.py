"""A markdown report with plots: the fit, its held-out check, and the compute split."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from laws import plots
from laws.allocate import AllocationConfig, Split
from laws.data import LOSS_UNIT, Table
from laws.fit import FitResult
from laws.io import write_json, write_text
from laws.select import CHOSEN_ON, holdout_split

TABLE_TOKENS_PER_PARAM = (20.0, 100.0, 1000.0)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines + [""]


@dataclass
class ReportConfig:
    out: Path
    k: int = 16
    accounting: str = "total"
    sizes: tuple[float, ...] = ()  # empty: from the smallest fitted N to 100x the largest
    # Budget range of the curves, in tokens per parameter; None: from the data's smallest
    # budget per parameter (at most 10), so the curves cover what the law was fitted on,
    # to 1e4.
    tokens_per_param: tuple[float, float] | None = None
    n_budgets: int = 40
    allocation: AllocationConfig = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.allocation = AllocationConfig(k=self.k, accounting=self.accounting)

    def build(self, result: FitResult, record: dict[str, Any], table: Table) -> Report:
        return Report(self, result, record, table)


class Report:
    def __init__(
        self, config: ReportConfig, result: FitResult, record: dict[str, Any], table: Table
    ) -> None:
        self.config = config
        self.result = result
        self.record = record
        self.table = table
        self.allocator = config.allocation.build(result.law.predict)

    def sizes(self) -> list[float]:
        if self.config.sizes:
            return sorted(self.config.sizes)
        lo, hi = self.table.N.min(), self.table.N.max() * 100
        return [float(f"{n:.2g}") for n in np.geomspace(lo, hi, 4)]

    def budgets(self, N: float) -> np.ndarray:
        lo, hi = self.config.tokens_per_param or (min(10.0, self.fitted_budget_per_param()), 1e4)
        return N * np.geomspace(lo, hi, self.config.n_budgets)

    def fitted_budget_per_param(self) -> float:
        """The smallest budget per parameter among the fitted runs, at this accounting."""
        t = self.table
        return float(np.min((t.D + self.allocator.config.cost_per_dp * t.Dp) / t.N))

    def predictions(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Fitted predictions; held-out rows predicted by a fit that did not see them."""
        law = self.result.law
        predicted = law.predict_table(self.table)
        heldout = self.record.get("heldout", {})
        if "params" not in heldout:
            return predicted, None
        test = holdout_split(self.table, heldout["split"])[1]
        train_law = replace(law, params={k: float(v) for k, v in heldout["params"].items()})
        predicted[test] = train_law.predict_table(self.table.subset(test))
        return predicted, test

    def write(self) -> Path:
        out = self.config.out
        sizes = self.sizes()
        predicted, heldout = self.predictions()
        curves: dict[float, list[Split]] = {
            n: self.allocator.budget_curve(n, self.budgets(n)) for n in sizes
        }
        d_splits = self.allocator.d_split_curve(sizes)
        focus = sizes[-1]
        images = {
            "Predicted vs observed": plots.predicted_vs_observed(
                self.table,
                predicted,
                f"{self.result.law.form.name}: predicted vs observed",
                out / "predicted_vs_observed.png",
                heldout,
            ),
            "Loss vs pretraining fraction": plots.loss_vs_fraction(
                self.allocator,
                focus,
                [focus * r for r in (20, 100, 500, 2000)],
                out / "loss_vs_fraction.png",
            ),
            "Optimal fraction vs budget": plots.optimal_fraction_vs_budget(
                self.allocator, curves, out / "optimal_fraction.png"
            ),
            "D_split vs model size": plots.d_split_vs_size(sizes, d_splits, out / "d_split.png"),
            "Compute multiplier vs budget": plots.multiplier_vs_budget(
                curves, out / "multiplier.png"
            ),
        }
        write_json(
            out / "curves.json",
            {
                "k": self.config.k,
                "accounting": self.config.accounting,
                "d_split": dict(zip(map(str, sizes), d_splits, strict=True)),
                "curves": {str(n): [s.to_json() for s in splits] for n, splits in curves.items()},
            },
        )
        return write_text(out / "report.md", "\n".join(self._markdown(sizes, images)))

    def _markdown(self, sizes: list[float], images: dict[str, Path]) -> list[str]:
        law, record = self.result.law, self.record
        cfg = self.config
        lines = [
            f"# Scaling-law report: {law.form.name}",
            "",
            f"Data: `{self.table.source}` ({len(self.table)} points, {self._fitted_sizes()}).",
            "",
            f"Form: {law.form.description}",
            "",
            f"Losses are in {LOSS_UNIT}.",
            "",
            *self._caveats(),
            "## Parameters",
            "",
        ]
        ci = self.result.ci
        rows = [[name, value, *(ci.get(name, ["", ""]))] for name, value in law.params.items()]
        lines += _markdown_table(["parameter", "value", "95% lo", "95% hi"], rows)
        if not ci:
            lines += [
                "The interval columns are empty: the fit ran no bootstrap "
                "(`laws fit --bootstrap B` resamples the runs B times to give them).",
                "",
            ]
        fit_scores = self.result.in_sample
        lines += ["## Fit quality", ""]
        score_rows = [["all points (in sample)", *(fit_scores.get(k) for k in _SCORES)]]
        if "heldout" in record:
            h = record["heldout"]
            score_rows.append(
                [f"held out ({h['split']}, {h['n_test']} points)", *(h.get(k) for k in _SCORES)]
            )
        lines += _markdown_table(
            ["", "R^2", "mean rel. err", f"max abs err ({LOSS_UNIT})", "max rel err"], score_rows
        )
        if record.get("selection"):
            chosen_on = record.get("chosen_on", "heldout")
            chosen = CHOSEN_ON.get(chosen_on, f"the {chosen_on} split")  # older fits: "fit"
            lines += ["## Form comparison", "", f"Chosen on {chosen}.", ""]
            sel_rows = []
            for row in record["selection"]:
                h = row.get("heldout", {})
                sel_rows.append(
                    [
                        row["form"],
                        row["n_params"],
                        row.get("fit_r2"),
                        row.get("aicc"),
                        row.get("validation", {}).get("mre"),
                        *(h.get(k) for k in _SCORES),
                        row.get("error", ""),
                    ]
                )
            lines += _markdown_table(
                [
                    "form",
                    "params",
                    "fit R^2",
                    "AICc",
                    "validation mean rel. err",
                    "held-out R^2",
                    "mean rel. err",
                    "max abs err",
                    "max rel err",
                    "error",
                ],
                sel_rows,
            )
        lines += [
            f"## Compute split (k = {cfg.k}, {cfg.accounting} cost)",
            "",
            "D* and D'* are the optimal pretraining and per-specialist tokens for budget T; "
            "D_split is the trunk size after which splitting pays off; the multiplier is how "
            "many times T standard pretraining needs to reach the split's loss."
            + (" Losses are means over the domains." if law.per_domain else "")
            + f" Sizes outside the fitted {self._fitted_sizes()} are extrapolations.",
            "",
        ]
        plan_rows = []
        for n in sizes:
            size = plots.human(n) + ("" if self._fitted(n) else " (extrapolated)")
            for ratio in TABLE_TOKENS_PER_PARAM:
                s = self.allocator.plan(n, n * ratio)
                plan_rows.append(
                    [
                        size,
                        plots.human(s.budget),
                        plots.human(s.D_star),
                        plots.human(s.D_prime_star),
                        s.fraction,
                        s.loss_star,
                        s.loss_pretrain_only,
                        "never" if s.D_split is None else plots.human(s.D_split),
                        s.multiplier,
                    ]
                )
        lines += _markdown_table(
            [
                "N",
                "T",
                "D*",
                "D'*",
                "fraction",
                f"loss (split, {LOSS_UNIT})",
                f"loss (pretrain only, {LOSS_UNIT})",
                "D_split",
                "multiplier",
            ],
            plan_rows,
        )
        lines += ["The same curves, as numbers: `curves.json`.", "", "## Plots", ""]
        for title, path in images.items():
            lines += [f"### {title}", "", f"![{title}]({path.name})", ""]
        return lines

    def _fitted(self, N: float) -> bool:
        """Whether N lies in the fitted range of sizes, give or take the 5% by which the
        default sizes are rounded (to two digits)."""
        return self.table.N.min() / 1.05 <= N <= self.table.N.max() * 1.05

    def _fitted_sizes(self) -> str:
        N = self.table.N
        return f"N from {plots.human(N.min())} to {plots.human(N.max())}"

    def _caveats(self) -> list[str]:
        """What the numbers below cannot carry: unidentified or bound parameters, and no
        extrapolation check."""
        record = self.record
        items = list(record.get("design_warnings", []))
        if self.result.at_bounds:
            items.append(
                f"{', '.join(self.result.at_bounds)} ended on a bound of the fit: the data may "
                "not constrain them or the form may not describe the data; predictions that "
                "depend on them are set by the bound"
            )
        if "heldout" not in record:
            items.append(
                "no held-out split (`--holdout none`): the law was not checked by "
                "extrapolation to points it was not fitted on"
            )
        if not items:
            return []
        return ["## Caveats", "", *(f"- {item}" for item in items), ""]


_SCORES = ("r2", "mre", "max_err", "max_rel_err")
