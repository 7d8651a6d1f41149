import numpy as np
import pytest

from laws.fit import FitConfig, FitError
from laws.select import SelectionConfig, Selector, aicc, holdout_split, validation_split

from .conftest import synthetic


def test_holdout_splits():
    table = synthetic("chinchilla_total")
    train, test = holdout_split(table, "largest-N")
    assert set(table.N[test]) == {table.N.max()} and table.N[train].max() < table.N.max()
    train, test = holdout_split(table, "largest-D")
    total = table.D + table.Dp
    assert total[test].min() > total[train].max()
    one_size = table.subset(np.flatnonzero(table.N.min() >= table.N))
    with pytest.raises(FitError, match="more than one model size"):
        holdout_split(one_size, "largest-N")


def test_the_validation_split_is_the_holdout_split_inside_the_training_rows():
    table = synthetic("chinchilla_total")
    sizes = sorted(set(table.N))
    fit, validation = validation_split(table, "largest-N")
    assert set(table.N[validation]) == {sizes[-2]} and set(table.N[fit]) == set(sizes[:-2])
    # Four sizes leave two to fit the validation split on: E + A/N^alpha is not identified.
    four_sizes = table.subset(np.flatnonzero(sizes[3] >= table.N))
    assert validation_split(four_sizes, "largest-N") is None


def test_the_validation_split_chooses_and_the_heldout_one_only_scores():
    rows = [{"form": "a", "heldout": {"mre": 0.01}, "validation": {"mre": 0.05}},
            {"form": "b", "heldout": {"mre": 0.03}, "validation": {"mre": 0.02}}]  # fmt: skip
    selector = SelectionConfig().build()
    assert Selector.chosen_on(rows) == "validation" and selector.pick(rows) == "b"
    for row in rows:
        del row["validation"]
    assert Selector.chosen_on(rows) == "heldout" and selector.pick(rows) == "a"


def test_auto_selection_picks_the_generating_form_by_extrapolation():
    table = synthetic("effective_data", noise=0.002, seed=2)
    selector = SelectionConfig(fit=FitConfig(n_starts=6)).build()
    rows = selector.compare(table)
    assert [r["form"] for r in rows] == list(selector.forms())
    sizes = sorted(set(table.N))
    for row in rows:
        held, validation = row["heldout"], row["validation"]
        assert held["n_test"] == int(np.sum(table.N.max() <= table.N))
        assert validation["n_test"] == int(np.sum(sizes[-2] == table.N))
        assert {"r2", "mre", "max_err", "max_rel_err"} <= set(held) <= set(validation)
    assert Selector.chosen_on(rows) == "validation"
    assert selector.pick(rows) == "effective_data"
    best = next(r for r in rows if r["form"] == "effective_data")["heldout"]
    assert best["r2"] > 0.99 and best["mre"] < 0.01


def test_per_domain_parameters_must_exist_in_some_candidate():
    selector = SelectionConfig(fit=FitConfig(per_domain=("gamma",))).build()
    with pytest.raises(ValueError, match="no candidate form has parameter"):
        selector.forms()


def test_without_a_heldout_split_aicc_chooses_and_charges_for_parameters():
    observed = np.array([3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3])
    close, closer = observed * 1.01, observed * 1.009
    # 19% less squared error does not pay for two more parameters; k = n - 1 cannot be judged.
    assert aicc(observed, close, 3) < aicc(observed, closer, 5)
    assert aicc(observed, closer, 7) == np.inf
    rows = [{"form": "a", "fit_mre": 0.01, "aicc": -40.0},
            {"form": "b", "fit_mre": 0.009, "aicc": -30.0}]  # fmt: skip
    selector = SelectionConfig(holdout="none").build()
    assert Selector.chosen_on(rows) == "aicc" and selector.pick(rows) == "a"


def test_selection_without_a_heldout_split_scores_every_form_by_aicc():
    table = synthetic("chinchilla_total", noise=0.002, seed=1)
    config = SelectionConfig(forms=("chinchilla_total", "liew_kato_n"), holdout="none",
                             fit=FitConfig(n_starts=4))  # fmt: skip
    selector = config.build()
    rows = selector.compare(table)
    assert all("heldout" not in row and np.isfinite(row["aicc"]) for row in rows)
    assert Selector.chosen_on(rows) == "aicc" and selector.pick(rows) == "chinchilla_total"
