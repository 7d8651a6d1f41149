import json
import subprocess
import sys

import pytest

from laws.cli import main
from laws.forms import FORMS

from .conftest import synthetic


@pytest.fixture
def results_csv(tmp_path):
    table = synthetic(
        "effective_data",
        noise=0.002,
        seed=4,
        tokens_per_param=(5.0, 20.0, 80.0),
        dp_over_d=(0.0, 0.1, 0.5),
    )
    path = tmp_path / "results.csv"
    lines = ["N,D,D_prime,loss"]
    lines += [
        f"{n:.6g},{d:.6g},{dp:.6g},{loss:.6g}"
        for n, d, dp, loss in zip(table.N, table.D, table.Dp, table.loss, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_plan_report_end_to_end(tmp_path, results_csv, capsys):
    fit_json = tmp_path / "fit.json"
    argv = [
        "fit",
        str(results_csv),
        "--form",
        "effective_data",
        "--bootstrap",
        "3",
        "--n-starts",
        "4",
        "--json",
        str(fit_json),
    ]
    assert main(argv) == 0
    fit = json.loads(fit_json.read_text())
    assert fit["form"] == "effective_data"
    assert set(fit["params"]) == {"E", "A", "alpha", "B", "beta", "w", "sigma", "tau"}
    assert set(fit["ci"]) == set(fit["params"])
    assert fit["r2"] > 0.999 and fit["mre"] < 0.01
    assert fit["heldout"]["split"] == "largest-N" and fit["heldout_r2"] > 0.99
    assert fit["n_inits"] >= 1000

    plan_json = tmp_path / "plan.json"
    argv = [
        "plan",
        "--fit",
        str(fit_json),
        "--n",
        "1.3e9",
        "--budget",
        "3.6e11",
        "--k",
        "16",
        "--json",
        str(plan_json),
    ]
    assert main(argv) == 0
    plan = json.loads(plan_json.read_text())
    assert 0 < plan["fraction"] < 1 and plan["multiplier"] > 1
    assert plan["D_star"] + 16 * plan["D_prime_star"] == pytest.approx(3.6e11)
    assert plan["D_split"] > 0 and set(plan["ci"]) >= {"fraction", "D_split", "multiplier"}
    assert "D'* =" in capsys.readouterr().out

    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--fit",
                str(fit_json),
                "--data",
                str(results_csv),
                "--out",
                str(out),
                "--n",
                "1e8",
                "--n",
                "1e9",
            ]
        )
        == 0
    )
    text = (out / "report.md").read_text()
    for png in (
        "predicted_vs_observed",
        "loss_vs_fraction",
        "optimal_fraction",
        "d_split",
        "multiplier",
    ):
        assert (out / f"{png}.png").stat().st_size > 10_000
        assert f"({png}.png)" in text
    assert "| w |" in text and "held out (largest-N" in text
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves["curves"]) == {"100000000.0", "1000000000.0"}
    fractions = [s["fraction"] for s in curves["curves"]["1000000000.0"]]
    assert fractions[0] > fractions[-1]


def test_bad_table_exits_2_naming_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,loss\n1e8,1e9,3.0\n1e8,2e9,nan\n")
    assert (
        main(["fit", str(bad), "--form", "chinchilla_total", "--json", str(tmp_path / "f.json")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}, line 3, column 'loss'" in err
    assert not (tmp_path / "f.json").exists()


def test_collinear_table_warns_on_stderr(tmp_path, capsys):
    rows = ["N,D,D_prime,loss"]
    rows += [
        f"{n},{20 * n},{dp},{3.0 - 0.1 * i}"
        for i, (n, dp) in enumerate(
            [(1e7, 0), (2e7, 1e7), (4e7, 0), (8e7, 1e8), (1.6e8, 0), (3.2e8, 1e8), (6.4e8, 0)]
        )
    ]
    path = tmp_path / "collinear.csv"
    path.write_text("\n".join(rows) + "\n")
    main(
        [
            "fit",
            str(path),
            "--form",
            "chinchilla_total",
            "--holdout",
            "none",
            "--n-starts",
            "2",
            "--json",
            str(tmp_path / "f.json"),
        ]
    )
    assert "collinear" in capsys.readouterr().err


def test_user_form_plugin_is_remembered_by_the_fit(tmp_path, results_csv):
    plugin = tmp_path / "forms.py"
    plugin.write_text(
        "from laws.forms import Param, register_form\n"
        "@register_form('test_cli_total_tokens', params=[\n"
        "    Param('E', 0.1, 10.0, (1.0, 2.0), log=True),\n"
        "    Param('B', 1e-2, 1e9, (1e2, 1e4, 1e6), log=True),\n"
        "    Param('beta', 0.0, 2.0, (0.1, 0.3, 0.6))])\n"
        "def total_tokens(N, D, Dp, E, B, beta):\n"
        "    return E + B * (D + Dp) ** -beta\n"
    )
    fit_json = tmp_path / "fit.json"
    try:
        assert (
            main(
                [
                    "fit",
                    str(results_csv),
                    "--form",
                    "test_cli_total_tokens",
                    "--plugin",
                    str(plugin),
                    "--n-starts",
                    "4",
                    "--json",
                    str(fit_json),
                ]
            )
            == 0
        )
        fit = json.loads(fit_json.read_text())
        assert fit["plugins"] == [str(plugin.resolve())] and fit["n_inits"] >= 1000
        # A fresh process finds the form again through the fit file.
        plan = subprocess.run(
            [
                sys.executable,
                "-m",
                "laws",
                "plan",
                "--fit",
                str(fit_json),
                "--n",
                "1e9",
                "--budget",
                "1e11",
                "--k",
                "4",
            ],
            capture_output=True,
            text=True,
        )
        assert plan.returncode == 0, plan.stderr
        assert "fraction 1.0000" in plan.stdout  # total tokens at k x the cost: no split
    finally:
        FORMS.pop("test_cli_total_tokens", None)


def test_module_entry_point_and_msplit_dispatch():
    help_text = subprocess.run(
        [sys.executable, "-m", "laws", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "fit" in help_text and "plan" in help_text and "report" in help_text
    from megatron_split.cli import main as msplit

    assert msplit(["laws", "forms"]) == 0


@pytest.fixture
def quick_fit(tmp_path, results_csv):
    """A chinchilla_total fit of results_csv without held-out split or bootstrap."""
    fit_json = tmp_path / "quick_fit.json"
    argv = ["fit", str(results_csv), "--form", "chinchilla_total", "--holdout", "none",
            "--n-starts", "2", "--json", str(fit_json)]  # fmt: skip
    assert main(argv) == 0
    return fit_json


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--n", "0"], "argument --n: '0' must be a finite number > 0"),
        (["--n=-5"], "argument --n: '-5' must be a finite number > 0"),
        (["--budget", "0"], "argument --budget: '0' must be a finite number > 0"),
        (["--budget=-1e6"], "argument --budget: '-1e6' must be a finite number > 0"),
        (["--budget", "inf"], "argument --budget: 'inf' must be a finite number > 0"),
        (["--budget", "nan"], "argument --budget: 'nan' must be a finite number > 0"),
        (["--k", "0"], "argument --k: '0' must be >= 1"),
        (["--k", "2.5"], "argument --k: '2.5' is not an integer"),
    ],
)
def test_plan_refuses_sizes_budgets_and_k_it_cannot_plan(option, message, capsys):
    argv = ["plan", "--fit", "fit.json", "--n", "1e9", "--budget", "1e11", "--k", "4", *option]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_plan_refuses_a_domain_the_fit_lacks_and_files_that_are_not_fits(
    tmp_path, quick_fit, capsys
):
    def plan(fit, *more: str) -> str:
        argv = ["plan", "--fit", str(fit), "--n", "1e9", "--budget", "1e11", "--k", "4", *more]
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "domain 'cluster_9': the fit has no per-domain parameters" in plan(
        quick_fit, "--domain", "cluster_9"
    )
    plan_json = tmp_path / "plan.json"
    argv = ["plan", "--fit", str(quick_fit), "--n", "1e9", "--budget", "1e11", "--k", "4",
            "--json", str(plan_json)]  # fmt: skip
    assert main(argv) == 0 and "nats/token" in capsys.readouterr().out
    assert f"{plan_json}: not a fit: a plan" in plan(plan_json)
    mismatched = tmp_path / "mismatched.json"
    mismatched.write_text(json.dumps({**json.loads(quick_fit.read_text()), "form": "liew_kato_n"}))
    err = plan(mismatched)
    assert f"{mismatched}: its parameters do not match form liew_kato_n" in err
    assert "Traceback" not in err


def test_report_refuses_a_table_the_law_was_not_fitted_on(tmp_path, results_csv, quick_fit, capsys):
    other = tmp_path / "other.csv"
    other.write_text("\n".join(results_csv.read_text().split()[:-1]))  # one row fewer
    argv = ["report", "--fit", str(quick_fit), "--data", str(other), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert f"{other} (44 points) is not the table {quick_fit} was fitted on" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "r").exists()


def test_report_keeps_the_fits_caveats(tmp_path, results_csv, quick_fit):
    record = json.loads(quick_fit.read_text())
    record.update(at_bounds=["beta"], design_warnings=["results.csv: one model size"])
    quick_fit.write_text(json.dumps(record))
    out = tmp_path / "report"
    # --output: the data commands' spelling of --out
    argv = ["report", "--fit", str(quick_fit), "--data", str(results_csv), "--output", str(out),
            "--n", "1e8", "--n", "1e11"]  # fmt: skip
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    caveats = text.split("## Caveats")[1].split("## Parameters")[0]
    assert "- results.csv: one model size" in caveats
    assert "- beta ended on a bound of the fit" in caveats
    assert "no held-out split (`--holdout none`)" in caveats
    assert "interval columns are empty: the fit ran no bootstrap" in text
    assert "Losses are in nats/token" in text and "loss (split, nats/token)" in text
    assert "| 100B (extrapolated) |" in text and "| 100M |" in text


def test_one_model_size_fails_once_with_a_hint_and_auto_then_ranks_by_aicc(tmp_path, capsys):
    path = tmp_path / "one_size.csv"
    rows = [f"1e8,{d:g},{dp:g},{3.0 - 0.1 * i:.2f}"
            for i, (d, dp) in enumerate([(1e9, 0), (2e9, 0), (4e9, 0), (1e9, 1e8), (2e9, 4e8),
                                         (4e9, 1e9), (8e9, 0), (8e9, 2e9)])]  # fmt: skip
    path.write_text("N,D,D_prime,loss\n" + "\n".join(rows) + "\n")
    fit_json = tmp_path / "fit.json"
    assert main(["fit", str(path), "--json", str(fit_json)]) == 2
    err = capsys.readouterr().err
    assert err.count("holdout largest-N needs more than one model size") == 1
    assert "pass --holdout none" in err and not fit_json.exists()
    argv = ["fit", str(path), "--holdout", "none", "--forms", "chinchilla_total,liew_kato_n",
            "--n-starts", "2", "--json", str(fit_json)]  # fmt: skip
    assert main(argv) == 0
    assert "chosen on: in-sample AICc: no held-out split" in capsys.readouterr().out
    fit = json.loads(fit_json.read_text())
    # liew_kato_n fits closer in sample, but 7 parameters on 8 points leave AICc undefined.
    assert fit["chosen_on"] == "aicc" and fit["form"] == "chinchilla_total"
    assert any("one model size" in w for w in fit["design_warnings"])


def test_fit_help_shows_the_form_default(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "(default auto)" in " ".join(capsys.readouterr().out.split())
