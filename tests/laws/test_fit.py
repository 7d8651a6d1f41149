import json
from dataclasses import replace

import numpy as np
import pytest

from laws.data import Table
from laws.fit import (
    FitConfig,
    FitError,
    Layout,
    Objective,
    resample,
    result_from_json,
    run_blocks,
)
from laws.forms import FORMS, Param, get_form, register_form
from laws.synthetic import SyntheticConfig

from .conftest import CHINCHILLA, TRUE, synthetic

FAST = FitConfig(n_starts=8)


def rel_err(fitted: dict, true: dict) -> dict:
    return {k: abs(fitted[k] / true[k] - 1) for k in true}


@pytest.mark.parametrize("name", ["chinchilla_total", "liew_kato_n", "effective_data"])
def test_noiseless_data_recovers_every_parameter(name):
    result = FAST.build(name).fit(synthetic(name))
    assert max(rel_err(result.law.params, TRUE[name]).values()) < 1e-4
    assert result.in_sample["r2"] > 0.999999
    assert result.n_inits >= 1000


def test_noisy_chinchilla_recovers_parameters_within_tolerance():
    # 0.3% log-normal noise on 150 points: the data-term parameters are pinned tightly;
    # A trades off against alpha and E (a known ridge), hence its wider tolerance.
    result = FAST.build("chinchilla_total").fit(synthetic("chinchilla_total", noise=0.003))
    err = rel_err(result.law.params, CHINCHILLA)
    assert err["E"] < 0.03 and err["B"] < 0.05 and err["beta"] < 0.02
    assert err["alpha"] < 0.06 and err["A"] < 0.35
    assert result.in_sample["mre"] < 0.004


def test_noisy_effective_data_recovers_split_parameters_and_predictions():
    table = synthetic("effective_data", noise=0.003, seed=1)
    result = FAST.build("effective_data").fit(table)
    err = rel_err(result.law.params, TRUE["effective_data"])
    assert err["w"] < 0.05 and err["sigma"] < 0.05 and err["tau"] < 0.08 and err["beta"] < 0.02
    truth = get_form("effective_data")(table.N, table.D, table.Dp, **TRUE["effective_data"])
    assert np.max(np.abs(result.law.predict_table(table) / truth - 1)) < 0.005


def test_objective_is_summed_over_points_not_averaged():
    table = synthetic("chinchilla_total", noise=0.01)
    doubled = table.subset(np.concatenate([np.arange(len(table))] * 2))
    layout = Layout(get_form("chinchilla_total"))
    theta = layout.to_theta(CHINCHILLA)[None, :] + 0.01
    single = Objective(layout, table, 1e-3).batch(theta)[0]
    assert Objective(layout, doubled, 1e-3).batch(theta)[0] == pytest.approx(2 * single)


def test_analytic_residual_gradient_matches_finite_differences():
    table = synthetic("liew_kato_n", noise=0.01)
    layout = Layout(get_form("liew_kato_n"))
    objective = Objective(layout, table, 1e-3)
    theta = layout.to_theta(TRUE["liew_kato_n"]) * 1.01
    _, grad = objective.value_and_grad(theta)
    for j in range(len(theta)):
        step = np.zeros_like(theta)
        step[j] = 1e-7 * max(1.0, abs(theta[j]))
        numeric = (
            objective.value_and_grad(theta + step)[0] - objective.value_and_grad(theta - step)[0]
        ) / (2 * step[j])
        assert grad[j] == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_per_domain_parameters_are_fitted_per_domain_and_others_shared():
    params = {**CHINCHILLA, "E[web]": 1.6, "E[code]": 2.2}
    table = SyntheticConfig(
        "chinchilla_total",
        params,
        domains=("web", "code"),
        noise=0.0,
        N=(1e7, 1e8, 1e9),
        tokens_per_param=(5.0, 20.0, 80.0),
        dp_over_d=(0.0, 0.5),
    ).build()
    result = FitConfig(n_starts=8, per_domain=("E",)).build("chinchilla_total").fit(table)
    fitted = result.law.params
    assert set(fitted) == {"E[code]", "E[web]", "A", "B", "alpha", "beta"}
    assert fitted["E[web]"] == pytest.approx(1.6, rel=1e-4)
    assert fitted["E[code]"] == pytest.approx(2.2, rel=1e-4)
    assert fitted["beta"] == pytest.approx(0.28, rel=1e-4)
    web = result.law.predict(1e9, 2e10, 0.0, "web")
    code = result.law.predict(1e9, 2e10, 0.0, "code")
    assert result.law.predict(1e9, 2e10, 0.0) == pytest.approx((web + code) / 2)


def test_per_domain_without_domain_column_is_an_error():
    with pytest.raises(FitError, match="need a 'domain' column"):
        FitConfig(per_domain=("E",)).build("chinchilla_total").fit(synthetic("chinchilla_total"))


def test_too_few_points_is_a_clear_error():
    table = Table.from_arrays([1e8, 2e8, 4e8], [1e9, 2e9, 8e9], [3.0, 2.9, 2.7], source="t.csv")
    with pytest.raises(FitError, match=r"t.csv: 3 points cannot fit form chinchilla_total with 5"):
        FAST.build("chinchilla_total").fit(table)


def test_form_undefined_on_the_data_is_a_clear_error():
    # effective_data needs a trunk: D = 0 leaves no effective data at all.
    N = np.array([1e8, 2e8] * 5)
    table = Table.from_arrays(N, np.zeros(10), np.full(10, 3.0), Dp=N * 10)
    with pytest.raises(FitError, match="not finite at any initialisation"):
        FAST.build("effective_data").fit(table)


def test_bootstrap_intervals_cover_the_truth_and_round_trip_through_json():
    table = synthetic("chinchilla_total", noise=0.003, seed=3)
    result = FitConfig(n_starts=8, bootstrap=12, seed=1).build("chinchilla_total").fit(table)
    ci = result.ci
    assert set(ci) == set(CHINCHILLA)
    for name in ("E", "B", "beta"):
        lo, hi = ci[name]
        assert lo <= result.law.params[name] <= hi
        assert lo < hi
    band = result.predict_interval(1e10, 2e11, 0.0)
    assert band[0] < result.law.predict(1e10, 2e11, 0.0) < band[1]
    restored = result_from_json(json.loads(json.dumps(result.to_json())))
    assert restored.law.params == result.law.params
    assert restored.ci == ci
    assert restored.in_sample == result.in_sample


def test_bootstrap_resamples_whole_runs_within_each_domain():
    # Two domains; each run contributes three checkpoints (rows) that must stay together.
    n_rows = 24
    table = Table.from_arrays(
        np.full(n_rows, 1e8),
        np.arange(1, n_rows + 1) * 1e9,
        np.linspace(3.0, 2.0, n_rows),
        domain=["web"] * 12 + ["code"] * 12,
        run=[f"r{i // 3}" for i in range(n_rows)],
    )
    blocks = run_blocks(table, by_domain=True)
    assert [len(runs) for runs in blocks] == [4, 4]
    rng = np.random.default_rng(0)
    for _ in range(20):
        index = resample(blocks, rng)
        counts = np.bincount(index, minlength=n_rows)
        per_run = counts.reshape(-1, 3)
        assert np.all(per_run == per_run[:, :1])  # a run's rows appear equally often
        assert per_run[:4, 0].sum() == 4 and per_run[4:, 0].sum() == 4  # 4 runs per domain


def test_parameters_pushed_to_a_bound_are_reported():
    # Data with beta = 0.28 under a form that caps beta at 0.1: the fit presses it there.
    capped = [Param("beta", 0.0, 0.1, (0.05,)) if p.name == "beta" else p
              for p in get_form("chinchilla_total").params]  # fmt: skip
    register_form("test_capped_beta", capped)(get_form("chinchilla_total").fn)
    try:
        result = FAST.build("test_capped_beta").fit(synthetic("chinchilla_total"))
        assert "beta" in result.at_bounds and result.law.params["beta"] == pytest.approx(0.1)
        assert result_from_json(result.to_json()).at_bounds == result.at_bounds
    finally:
        FORMS.pop("test_capped_beta")
    well_posed = FAST.build("chinchilla_total").fit(synthetic("chinchilla_total"))
    assert well_posed.at_bounds == []


def test_a_domain_the_law_has_no_parameters_for_is_refused():
    shared = FAST.build("chinchilla_total").fit(synthetic("chinchilla_total"))
    with pytest.raises(FitError, match="no per-domain parameters"):
        shared.law.predict(1e9, 2e10, 0.0, "web")
    law = replace(shared.law, params={**CHINCHILLA, "E[web]": 1.6}, per_domain=("E",),
                  domains=("web",))  # fmt: skip
    assert law.predict(1e9, 2e10, 0.0, "web") > 0
    with pytest.raises(FitError, match=r"unknown domain 'code'; the fit's domains: web"):
        law.predict(1e9, 2e10, 0.0, "code")


def test_a_record_that_is_not_a_fit_of_its_form_is_refused():
    record = FAST.build("chinchilla_total").fit(synthetic("chinchilla_total")).to_json()
    plan = {"N": 1e9, "budget": 1e11, "D_star": 1e11, "fraction": 1.0}
    with pytest.raises(FitError, match=r"not a fit: a plan \(`laws plan --json` wrote it\)"):
        result_from_json(plan)
    with pytest.raises(FitError, match="not a fit: no 'form' and 'params'"):
        result_from_json([1, 2])
    with pytest.raises(FitError, match=r"do not match form effective_data \(missing sigma, "
                       r"tau, w; expected E, A, alpha, B, beta, w, sigma, tau\)"):  # fmt: skip
        result_from_json({**record, "form": "effective_data"})


def test_fitted_on_recognises_the_fitted_table_in_any_order():
    table = synthetic("chinchilla_total", noise=0.003)
    record = json.dumps(FAST.build("chinchilla_total").fit(table).to_json())
    result = result_from_json(json.loads(record))  # the scores as a fit file keeps them
    assert result.fitted_on(table.subset(np.arange(len(table))[::-1]))
    assert not result.fitted_on(table.subset(np.arange(len(table) - 1)))
    other = synthetic("chinchilla_total", noise=0.003, seed=9)
    assert len(other) == len(table) and not result.fitted_on(other)
