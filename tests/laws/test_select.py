import numpy as np
import pytest

from laws.fit import FitConfig, FitError
from laws.select import SelectionConfig, holdout_split

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


def test_auto_selection_picks_the_generating_form_by_extrapolation():
    table = synthetic("effective_data", noise=0.002, seed=2)
    selector = SelectionConfig(fit=FitConfig(n_starts=6)).build()
    rows = selector.compare(table)
    assert [r["form"] for r in rows] == list(selector.forms())
    for row in rows:
        held = row["heldout"]
        assert held["n_test"] == int(np.sum(table.N.max() <= table.N))
        assert {"r2", "mre", "max_err", "max_rel_err"} <= set(held)
    assert selector.pick(rows) == "effective_data"
    best = next(r for r in rows if r["form"] == "effective_data")["heldout"]
    assert best["r2"] > 0.99 and best["mre"] < 0.01


def test_per_domain_parameters_must_exist_in_some_candidate():
    selector = SelectionConfig(fit=FitConfig(per_domain=("gamma",))).build()
    with pytest.raises(ValueError, match="no candidate form has parameter"):
        selector.forms()
