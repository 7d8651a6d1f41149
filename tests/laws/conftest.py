import numpy as np
import pytest

from laws.synthetic import REFERENCE_PARAMS, SyntheticConfig

TRUE = REFERENCE_PARAMS
CHINCHILLA = TRUE["chinchilla_total"]

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
