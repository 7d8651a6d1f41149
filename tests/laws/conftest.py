import numpy as np
import pytest

from laws.synthetic import SyntheticConfig

CHINCHILLA = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28}
LIEW_KATO = {"E": 1.8, "A": 400.0, "alpha": 0.34, "B": 2000.0, "a1": 0.28, "a2": 0.1, "a3": 0.003}
EFFECTIVE = {
    "E": 1.8,
    "A": 400.0,
    "alpha": 0.34,
    "B": 2000.0,
    "beta": 0.28,
    "w": 30.0,
    "sigma": 20.0,
    "tau": 0.5,
}
TRUE = {"chinchilla_total": CHINCHILLA, "liew_kato_n": LIEW_KATO, "effective_data": EFFECTIVE}

# A wide design (N over 100x, D/N over 100x, D'/D from 0 to 1): every parameter identified.
WIDE = {
    "N": (1e7, 3e7, 1e8, 3e8, 1e9),
    "tokens_per_param": tuple(np.geomspace(2, 200, 6)),
    "dp_over_d": (0.0, 0.05, 0.2, 0.5, 1.0),
}


def synthetic(form: str, noise: float = 0.0, seed: int = 0, **design):
    return SyntheticConfig(form, TRUE[form], noise=noise, seed=seed, **{**WIDE, **design}).build()


@pytest.fixture
def write_csv(tmp_path):
    def write(rows: list[dict], name: str = "results.csv"):
        path = tmp_path / name
        header = list(dict.fromkeys(k for r in rows for k in r))
        lines = [",".join(header)]
        lines += [",".join(str(r.get(k, "")) for k in header) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write
