import numpy as np
import pytest

from laws.forms import FORMS, Param, get_form, load_plugin, register_form

from .conftest import TRUE

N = np.array([1e8, 1e9])
D = np.array([2e9, 2e10])


@pytest.mark.parametrize(
    "name", ["chinchilla_total", "liew_kato_n", "effective_data", "kaplan_effective_data"]
)
def test_builtin_forms_are_finite_at_zero_specialisation_and_have_a_1000_point_grid(name):
    form = get_form(name)
    loss = form(N, D, 0.0, **TRUE[name])
    assert np.all(np.isfinite(loss)) and np.all(loss > TRUE[name]["E"])
    assert len(form.init_grid()) >= 1000
    assert form.init_grid().shape[1] == len(form.params)


def test_forms_reduce_to_pretraining_only_chinchilla_at_zero_d_prime():
    p = TRUE["chinchilla_total"]
    expected = p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
    np.testing.assert_allclose(get_form("chinchilla_total")(N, D, 0.0, **p), expected)
    lk = dict(TRUE["liew_kato_n"])
    lk_expected = lk["E"] + lk["A"] / N ** lk["alpha"] + lk["B"] / D ** lk["a1"]
    np.testing.assert_allclose(get_form("liew_kato_n")(N, D, 0.0, **lk), lk_expected)
    eff = TRUE["effective_data"]
    eff_expected = eff["E"] + eff["A"] / N ** eff["alpha"] + eff["B"] / D ** eff["beta"]
    np.testing.assert_allclose(get_form("effective_data")(N, D, 0.0, **eff), eff_expected)


def test_kaplan_form_is_kaplans_law_and_size_pays_only_with_data():
    form, p = get_form("kaplan_effective_data"), TRUE["kaplan_effective_data"]
    kaplan = p["E"] + ((p["Nc"] / N) ** (p["alpha"] / p["beta"]) + p["Dc"] / D) ** p["beta"]
    np.testing.assert_allclose(form(N, D, 0.0, **p), kaplan)  # eq. 1.5, plus E
    # Unlike a sum of a size and a data term, ten times the parameters gains more with more
    # data: at few tokens the data term dominates whatever the size.
    gain = [form(1e8, d, 0.0, **p) - form(1e9, d, 0.0, **p) for d in (1e8, 1e10, 1e12)]
    assert gain == sorted(gain) and gain[0] < gain[-1] / 2
    chinchilla, q = get_form("chinchilla_total"), TRUE["chinchilla_total"]
    additive = [chinchilla(1e8, d, 0.0, **q) - chinchilla(1e9, d, 0.0, **q) for d in (1e8, 1e12)]
    assert additive[0] == pytest.approx(additive[1])


def test_effective_data_worth_of_specialisation_tokens_saturates():
    form, p = get_form("effective_data"), TRUE["effective_data"]
    n, d = 1e8, 1e10  # trunk well past sigma tokens per parameter
    gains = [form(n, d, 0.0, **p) - form(n, d, dp, **p) for dp in (1e8, 1e9, 1e10, 1e11)]
    assert all(g > 0 for g in gains)
    per_token = [g / dp for g, dp in zip(gains, (1e8, 1e9, 1e10, 1e11), strict=True)]
    assert per_token == sorted(per_token, reverse=True)  # diminishing returns


def test_forms_broadcast_candidates_against_points():
    form = get_form("chinchilla_total")
    values = {k: np.full((3, 1), v) for k, v in TRUE["chinchilla_total"].items()}
    assert form(N[None, :], D[None, :], 0.0, **values).shape == (3, 2)


def test_user_form_in_a_few_lines():
    @register_form(
        "test_user_pure_n",
        params=[
            Param("E", 0.1, 10.0, (1.0, 2.0), log=True),
            Param("A", 1e-2, 1e9, (1e2, 1e4), log=True),
            Param("alpha", 0.0, 2.0, (0.2, 0.5)),
        ],
    )
    def pure_n(N, D, Dp, E, A, alpha):
        """L = E + A / N^alpha."""
        return E + A * N**-alpha

    try:
        form = get_form("test_user_pure_n")
        assert form.param_names == ("E", "A", "alpha")
        assert form.description == "L = E + A / N^alpha."
        assert form(1e8, 1e9, 0.0, E=2.0, A=100.0, alpha=0.5) == pytest.approx(2.01)
        with pytest.raises(ValueError, match="already registered"):
            register_form("test_user_pure_n", params=form.params)(pure_n)
    finally:
        FORMS.pop("test_user_pure_n")


def test_param_rejects_inconsistent_bounds_and_grids():
    with pytest.raises(ValueError, match="lower"):
        Param("x", 1.0, 0.0, (0.5,))
    with pytest.raises(ValueError, match="log scale"):
        Param("x", 0.0, 1.0, (0.5,), log=True)
    with pytest.raises(ValueError, match="outside bounds"):
        Param("x", 0.0, 1.0, (2.0,))


def test_unknown_form_lists_registered_ones():
    with pytest.raises(KeyError, match="chinchilla_total"):
        get_form("no_such_form")


def test_plugin_file_registers_forms(tmp_path):
    plugin = tmp_path / "my_forms.py"
    plugin.write_text(
        "from laws.forms import Param, register_form\n"
        "@register_form('test_plugin_form', params=[Param('E', 0.1, 10.0, (1.0,))])\n"
        "def f(N, D, Dp, E):\n"
        "    return E + 0 * N\n"
    )
    try:
        load_plugin(plugin)
        load_plugin(plugin)  # a second load is a no-op, not a duplicate registration
        assert get_form("test_plugin_form").param_names == ("E",)
    finally:
        FORMS.pop("test_plugin_form", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plugin(tmp_path / "missing.py")
