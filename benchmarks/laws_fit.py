"""Benchmark: fitting every built-in scaling-law form to 500 synthetic points.

Measures, per form: the wall time of a full fit (grid of >= 1000 initialisations scored
vectorised, the best 32 descended by L-BFGS-B, the best 4 polished by Gauss-Newton), the
grid scoring alone, and the parameter recovery on noiseless and noisy data; then a
per-domain fit (2 domains x 250 points, E and B per domain) and the bootstrap cost. The
baseline, measured in the same run, is the cost of one descent extrapolated to every grid
point (what a fit that started L-BFGS-B from every initialisation would pay).

    python benchmarks/laws_fit.py --json benchmarks/results/laws_fit.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from laws.fit import FitConfig, Layout, Objective
from laws.forms import get_form
from laws.io import write_json
from laws.synthetic import REFERENCE_PARAMS, SyntheticConfig

TRUE = REFERENCE_PARAMS
# 5 sizes x 10 tokens-per-parameter ratios x 10 D'/D ratios = 500 points.
DESIGN = {
    "N": (1e7, 3e7, 1e8, 3e8, 1e9),
    "tokens_per_param": tuple(np.geomspace(2, 200, 10)),
    "dp_over_d": tuple(np.linspace(0.0, 1.0, 10)),
}
NOISE = 0.003


def max_rel_err(fitted: dict[str, float], true: dict[str, float]) -> float:
    return max(abs(fitted[k] / v - 1) for k, v in true.items())


def bench_form(name: str, config: FitConfig) -> dict[str, float]:
    true = TRUE[name]
    clean = SyntheticConfig(name, true, noise=0.0, **DESIGN).build()
    noisy = SyntheticConfig(name, true, noise=NOISE, seed=1, **DESIGN).build()
    assert len(noisy) == 500
    fitter = config.build(name)
    result = fitter.fit(noisy)  # the timed fit: 500 noisy points, full grid
    clean_result = fitter.fit(clean)

    layout = Layout(get_form(name))
    grid = fitter.grid(np.random.default_rng(0))
    with threadpool_limits(1, user_api="blas"):
        start = time.perf_counter()
        Objective(layout, noisy, config.huber_delta).batch(grid)
    grid_seconds = time.perf_counter() - start
    per_start = (result.fit_seconds - grid_seconds) / result.n_starts
    truth = get_form(name)(noisy.N, noisy.D, noisy.Dp, **true)
    return {
        "fit_seconds": result.fit_seconds,
        "grid_seconds": grid_seconds,
        "descent_seconds_per_start": per_start,
        "n_inits": result.n_inits,
        "n_starts": result.n_starts,
        "naive_every_init_seconds_est": per_start * result.n_inits,
        "speedup_vs_lbfgs_from_every_init": per_start * result.n_inits / result.fit_seconds,
        "recovered_max_rel_err_noiseless": max_rel_err(clean_result.law.params, true),
        "recovered_max_rel_err_noisy": max_rel_err(result.law.params, true),
        "noisy_prediction_max_rel_err_vs_truth": float(
            np.max(np.abs(result.law.predict_table(noisy) / truth - 1))
        ),
        "r2_noisy": result.in_sample["r2"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, metavar="OUT")
    parser.add_argument("--bootstrap", type=int, default=20, help="replicates to time")
    args = parser.parse_args(argv)

    config = FitConfig()
    by_form = {}
    for name in TRUE:
        by_form[name] = bench_form(name, config)
        print(f"{name}: {by_form[name]['fit_seconds']:.2f} s", file=sys.stderr)

    per_domain_params = {
        **TRUE["effective_data"],
        "E[web]": 1.6,
        "E[code]": 2.1,
        "B[web]": 1500.0,
        "B[code]": 2600.0,
    }
    design = {**DESIGN, "dp_over_d": DESIGN["dp_over_d"][::2]}  # 250 points per domain
    two_domains = SyntheticConfig(
        "effective_data", per_domain_params, noise=NOISE, domains=("web", "code"), **design
    ).build()
    assert len(two_domains) == 500
    per_domain = FitConfig(per_domain=("E", "B")).build("effective_data").fit(two_domains)
    print(f"effective_data, E and B per domain: {per_domain.fit_seconds:.2f} s", file=sys.stderr)

    table = SyntheticConfig(
        "chinchilla_total", TRUE["chinchilla_total"], noise=NOISE, **DESIGN
    ).build()
    boot = FitConfig(bootstrap=args.bootstrap).build("chinchilla_total").fit(table)
    plain = config.build("chinchilla_total").fit(table)
    record = {
        "fit_seconds_500pts": max(r["fit_seconds"] for r in by_form.values()),
        "n_inits": min(r["n_inits"] for r in by_form.values()),
        "n_starts": config.n_starts,
        "recovered_max_rel_err": max(
            r["recovered_max_rel_err_noiseless"] for r in by_form.values()
        ),
        "noise": NOISE,
        "fit_seconds_500pts_per_domain": per_domain.fit_seconds,
        "per_domain_recovered_max_rel_err_noisy": max_rel_err(
            per_domain.law.params,
            {k: v for k, v in per_domain_params.items() if k not in ("E", "B")},
        ),
        "bootstrap_seconds_per_replicate": (boot.fit_seconds - plain.fit_seconds) / args.bootstrap,
        "cpu_count": os.cpu_count(),
        "by_form": by_form,
    }
    write_json(args.json, record)
    print(
        f"wrote {args.json}: fit_seconds_500pts {record['fit_seconds_500pts']:.2f}, "
        f"recovered_max_rel_err {record['recovered_max_rel_err']:.2e}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
