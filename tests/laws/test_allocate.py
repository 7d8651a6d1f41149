import numpy as np
import pytest

from laws.allocate import AllocationConfig, interval
from laws.fit import FittedLaw
from laws.forms import get_form

from .conftest import TRUE


def allocator(name: str, **config):
    law = FittedLaw(get_form(name), TRUE[name])
    return AllocationConfig(**config).build(law.predict)


def test_total_tokens_law_never_splits_when_specialists_cost_k_times_more():
    plan = allocator("chinchilla_total", k=16).plan(1.3e9, 3.6e11)
    assert plan.fraction == pytest.approx(1.0)
    assert plan.D_prime_star == pytest.approx(0.0, abs=1e3)
    assert plan.D_split is None
    assert plan.multiplier == pytest.approx(1.0, rel=1e-9)


def test_total_tokens_law_is_indifferent_under_per_model_accounting():
    alloc = allocator("chinchilla_total", k=16, accounting="per-model")
    losses = alloc.loss_at_fraction(1.3e9, 3.6e11, np.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(losses, losses[0], rtol=1e-12)


def test_effective_data_optimum_is_interior_and_shifts_with_budget():
    alloc = allocator("effective_data", k=16)
    plans = alloc.budget_curve(1.3e9, [1.2e11, 3.6e11, 3.6e12])
    fractions = [p.fraction for p in plans]
    assert all(0.05 < f < 0.95 for f in fractions)
    assert fractions == sorted(fractions, reverse=True)  # pretraining share falls
    d_stars = [p.D_star for p in plans]
    assert d_stars == sorted(d_stars)  # while pretraining tokens grow
    for p in plans:
        assert p.D_star + 16 * p.D_prime_star == pytest.approx(p.budget)
        assert p.loss_star < p.loss_pretrain_only


def test_optimum_beats_every_other_fraction():
    alloc = allocator("effective_data", k=8)
    best_f, best_loss = alloc.optimal_fraction(1e9, 2e11)
    others = alloc.loss_at_fraction(1e9, 2e11, np.linspace(0.01, 1.0, 500))
    assert best_loss <= others.min() + 1e-12
    assert alloc.loss_at_fraction(1e9, 2e11, best_f) == pytest.approx(best_loss)


def test_d_split_matches_closed_form_and_grows_with_model_size():
    # effective_data depends on (D, D') only through D_eff; at D' = 0 a specialisation
    # token is worth w D / (D + sigma N) mixture tokens at k times the cost, so splitting
    # starts to pay at D = sigma N k / (w - k).
    p, k = TRUE["effective_data"], 16
    alloc = allocator("effective_data", k=k, probe=1e-6)
    for n in (1e8, 1e9, 1e10):
        expected = p["sigma"] * n * k / (p["w"] - k)
        assert alloc.d_split(n) == pytest.approx(expected, rel=1e-3)
    splits = allocator("effective_data", k=k).d_split_curve([1e8, 1e9, 1e10])
    assert splits == sorted(splits)


def test_multiplier_is_the_token_ratio_pretraining_needs_for_the_same_loss():
    alloc = allocator("effective_data", k=16)
    plan = alloc.plan(1.3e9, 3.6e11)
    assert plan.multiplier > 1.0
    reached = alloc.loss(1.3e9, plan.multiplier * plan.budget, 0.0)
    assert reached == pytest.approx(plan.loss_star, rel=1e-9)
    larger = alloc.plan(1.3e9, 3.6e12)
    assert larger.multiplier > plan.multiplier  # splitting helps more at larger budgets


def test_unreachable_loss_gives_infinite_multiplier():
    alloc = allocator("effective_data", k=16)
    e = TRUE["effective_data"]["E"]
    assert alloc.tokens_to_reach(1e9, target=e, around=1e11) == float("inf")


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="accounting"):
        AllocationConfig(accounting="per-cluster")
    with pytest.raises(ValueError, match="k must be"):
        AllocationConfig(k=0)


def test_interval_of_bootstrap_values():
    assert interval([1.0, 2.0, 3.0]) == pytest.approx([1.05, 2.95])
    assert interval([1.0, None]) is None
