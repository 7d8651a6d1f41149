"""Results tables drawn from a form with known parameters plus log-normal noise.

Used to check that fits recover what generated the data, and to size benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from laws.data import Table
from laws.forms import get_form

# Known parameters of each built-in form, of realistic magnitudes: what tests recover and
# benchmarks time.
REFERENCE_PARAMS: dict[str, dict[str, float]] = {
    "chinchilla_total": {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28},
    "liew_kato_n": {
        "E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "a1": 0.28, "a2": 0.1, "a3": 0.003,
    },
    "effective_data": {
        "E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.28,
        "w": 30.0, "sigma": 20.0, "tau": 0.5,
    },
    "kaplan_effective_data": {  # Nc, alpha = alpha_N, Dc, beta = alpha_D of Kaplan et al.
        "E": 1.8, "Nc": 8.8e13, "alpha": 0.076, "Dc": 5.4e13, "beta": 0.095,
        "w": 30.0, "sigma": 20.0, "tau": 0.5,
    },
}  # fmt: skip


@dataclass
class SyntheticConfig:
    """A full factorial design: model sizes x tokens per parameter x D'/D ratios [x domains].

    ``params`` holds the form's parameters; with ``domains``, a parameter may instead be
    given per domain as ``"E[web]"`` entries.
    """

    form: str
    params: dict[str, float]
    N: tuple[float, ...] = (2e7, 5e7, 1e8, 2e8, 4e8)
    tokens_per_param: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0)
    dp_over_d: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    domains: tuple[str, ...] = ()
    noise: float = 0.005
    seed: int = 0

    def build(self) -> Table:
        form = get_form(self.form)
        rng = np.random.default_rng(self.seed)
        grids = np.meshgrid(self.N, self.tokens_per_param, self.dp_over_d, indexing="ij")
        N, tpp, ratio = (g.ravel() for g in grids)
        D = N * tpp
        Dp = D * ratio
        if not self.domains:
            loss = form(N, D, Dp, **self.params)
            domain = None
        else:
            parts = []
            for d in self.domains:
                values = {
                    p: self.params.get(f"{p}[{d}]", self.params.get(p)) for p in form.param_names
                }
                parts.append(form(N, D, Dp, **values))
            loss = np.concatenate(parts)
            N, D, Dp = (np.tile(a, len(self.domains)) for a in (N, D, Dp))
            domain = np.repeat(np.array(self.domains, dtype=object), len(parts[0]))
        loss = loss * np.exp(self.noise * rng.standard_normal(len(loss)))
        return Table.from_arrays(N, D, loss, Dp, domain, source=f"<synthetic {self.form}>")
