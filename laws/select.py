"""Model selection by extrapolation: fit small, predict larger, compare forms.

Two splits of the same kind, nested: the held-out rows (the largest model, say) are
predicted by a fit on the rest, and inside the rest a validation split (the next largest)
is predicted by a fit on what remains. The form is chosen on the validation split, so the
held-out score of the chosen form is an extrapolation it was never selected on; when the
rest cannot be split again (a validation fit needs three sizes), the held-out split
chooses, and says so. Without a held-out split (``holdout="none"``) nothing is
extrapolated: the forms are ranked by AICc of the in-sample log-loss residuals."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from laws.data import Table
from laws.fit import FitConfig, FitError, scores
from laws.forms import FORMS, get_form

HOLDOUTS = ("largest-N", "largest-D", "none")
CRITERIA = ("mre", "max_rel_err", "max_err")


# What chose the form (``Selector.chosen_on``), in words for the fit's output and report.
CHOSEN_ON = {
    "validation": "the validation split (the held-out rows never chose the form)",
    "heldout": "the held-out split (too few sizes for a validation split, so the held-out "
    "score of the chosen form is optimistic)",
    "aicc": "in-sample AICc: no held-out split (--holdout none), so the law is not checked "
    "by extrapolation",
}


def holdout_split(table: Table, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test).

    ``largest-N``: test on every row of the largest model. ``largest-D``: test on the rows
    whose total tokens D + D' are in the top 20% (the longest budgets).
    """
    if how == "largest-N":
        test = table.N.max() <= table.N
        if test.all():
            raise FitError(f"{table.source}: holdout largest-N needs more than one model size")
    elif how == "largest-D":
        total = table.D + table.Dp
        test = total >= np.quantile(total, 0.8)
        if test.all():
            raise FitError(f"{table.source}: holdout largest-D needs more than one token budget")
    else:
        raise ValueError(f"holdout must be one of {HOLDOUTS[:-1]}, got {how!r}")
    return np.flatnonzero(~test), np.flatnonzero(test)


# E + A/N^alpha has three size parameters: fitted on two sizes, a one-parameter family of
# them fits equally well, each extrapolating differently, and where the optimiser stops
# (rounding decides: numpy's AVX-512 and AVX2 kernels chose different forms) would choose.
MIN_SIZES_TO_EXTRAPOLATE = 3


def validation_split(table: Table, how: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices (fit, validation) inside the held-out split's training rows, or None when
    those rows leave too little to split again (a size law needs three sizes to fit)."""
    train, _ = holdout_split(table, how)
    inner = table.subset(train)
    try:
        fit, validation = holdout_split(inner, how)
    except FitError:
        return None
    if how == "largest-N" and len(np.unique(inner.N[fit])) < MIN_SIZES_TO_EXTRAPOLATE:
        return None
    return train[fit], train[validation]


def heldout_scores(table: Table, form: str, how: str, fit_config: FitConfig) -> dict[str, Any]:
    return _extrapolation(table, form, how, fit_config, *holdout_split(table, how))


def validation_scores(
    table: Table, form: str, how: str, fit_config: FitConfig
) -> dict[str, Any] | None:
    split = validation_split(table, how)
    return None if split is None else _extrapolation(table, form, how, fit_config, *split)


def _extrapolation(
    table: Table, form: str, how: str, fit_config: FitConfig, train: np.ndarray, test: np.ndarray
) -> dict[str, Any]:
    # Extrapolation scores need the point fit only: the bootstrap belongs to the final fit.
    result = replace(fit_config, bootstrap=0).build(form).fit(table.subset(train))
    test_table = table.subset(test)
    return {
        "split": how,
        "n_train": len(train),
        "n_test": len(test),
        **scores(test_table.loss, result.law.predict_table(test_table)),
        "params": result.law.params,  # the fit that never saw the test rows
    }


def aicc(observed: np.ndarray, predicted: np.ndarray, n_params: int) -> float:
    """Small-sample Akaike criterion of the log-loss residuals (lower is better):
    n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1). Unlike an in-sample error, which never gets worse
    with more parameters, it charges for each; inf when n <= k + 1, too few points to judge.
    (The fit minimises a Huber loss, not RSS: for residuals below delta they agree.)"""
    n, k = len(observed), n_params
    if n <= k + 1:
        return float("inf")
    rss = max(float(np.sum((np.log(predicted) - np.log(observed)) ** 2)), np.finfo(float).tiny)
    return float(n * np.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1))


def per_domain_for(form: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The requested per-domain names this form has (forms differ in their parameters)."""
    have = get_form(form).param_names
    return tuple(n for n in names if n in have)


@dataclass
class SelectionConfig:
    forms: tuple[str, ...] = ()  # empty: every registered form
    holdout: str = "largest-N"
    criterion: str = "mre"
    fit: FitConfig = field(default_factory=FitConfig)

    def build(self) -> Selector:
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout must be one of {HOLDOUTS}, got {self.holdout!r}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        return Selector(self)


class Selector:
    def __init__(self, config: SelectionConfig) -> None:
        self.config = config

    def forms(self) -> tuple[str, ...]:
        names = self.config.forms or tuple(FORMS)
        wanted = self.config.fit.per_domain
        missing = [n for n in wanted if not any(n in get_form(f).param_names for f in names)]
        if missing:
            raise ValueError(f"no candidate form has parameter(s) {', '.join(missing)}")
        return names

    def fit_config_for(self, form: str) -> FitConfig:
        return replace(self.config.fit, per_domain=per_domain_for(form, self.config.fit.per_domain))

    def compare(self, table: Table) -> list[dict[str, Any]]:
        """One row per form: in-sample fit on all data, and held-out scores (AICc without
        a held-out split)."""
        rows = []
        # Comparisons need point fits: the bootstrap belongs to the final pick.
        for name in self.forms():
            config = replace(self.fit_config_for(name), bootstrap=0)
            row: dict[str, Any] = {"form": name, "n_params": len(get_form(name).params)}
            try:
                full = config.build(name).fit(table)
                row.update({f"fit_{k}": v for k, v in full.in_sample.items()})
                if self.config.holdout == "none":
                    predicted = full.law.predict_table(table)
                    row["aicc"] = aicc(table.loss, predicted, len(full.law.params))
                else:
                    row["heldout"] = heldout_scores(table, name, self.config.holdout, config)
                    validation = validation_scores(table, name, self.config.holdout, config)
                    if validation is not None:
                        row["validation"] = validation
            except FitError as e:
                row["error"] = str(e)
            rows.append(row)
        return rows

    @staticmethod
    def chosen_on(rows: list[dict[str, Any]]) -> str:
        """What chooses: the validation split when every fitted form has one, else the
        held-out split, else (no held-out split) the in-sample AICc."""
        fitted = [row for row in rows if "error" not in row]
        if fitted and all("validation" in row for row in fitted):
            return "validation"
        return "heldout" if fitted and all("heldout" in row for row in fitted) else "aicc"

    def pick(self, rows: list[dict[str, Any]]) -> str:
        """Lowest criterion on the validation split (else the held-out one); lowest AICc
        without a held-out split, as in-sample errors always favour the most parameters."""
        key, split = self.config.criterion, self.chosen_on(rows)

        def score(row: dict[str, Any]) -> float:
            if "error" in row:
                return np.inf
            value = row["aicc"] if split == "aicc" else row[split][key]
            return value if np.isfinite(value) else np.inf

        best = min(rows, key=score)
        if not np.isfinite(score(best)):
            raise FitError(
                "no form could be fitted: "
                + "; ".join(r.get("error", f"{r['form']}: no finite {split} score") for r in rows)
            )
        return str(best["form"])
