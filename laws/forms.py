"""Functional forms L(N, D, D'): named parameters, bounds, an init grid and a formula.

A form's formula is a plain numpy function of ``(N, D, Dp, **params)`` that broadcasts:
the fitter calls it with data arrays of shape ``(1, n)`` and parameter arrays of shape
``(S, 1)`` (or ``(S, n)`` for per-domain parameters) to score S candidates at once.
Every form must be valid at ``Dp == 0`` (plain pretraining).

Write a new form in a few lines::

    @register_form(
        "my_law",
        params=[Param("E", 0.1, 10, (1.0, 2.0)), Param("A", 1e-2, 1e9, (1e2, 1e4), log=True),
                Param("alpha", 0.0, 2.0, (0.2, 0.5))],
    )
    def my_law(N, D, Dp, E, A, alpha):
        return E + A * N**-alpha
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FormFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Param:
    """One parameter: bounds and grid values in natural units.

    ``log=True`` makes the optimiser work on log(value): right for positive scales that
    span decades (A, B, E), wrong for exponents that may cross zero.
    """

    name: str
    lower: float
    upper: float
    init: tuple[float, ...]
    log: bool = False

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"param {self.name}: lower {self.lower} >= upper {self.upper}")
        if self.log and self.lower <= 0:
            raise ValueError(f"param {self.name}: log scale needs lower > 0, got {self.lower}")
        bad = [v for v in self.init if not self.lower <= v <= self.upper]
        if bad or not self.init:
            raise ValueError(f"param {self.name}: init values {bad or '()'} outside bounds")

    def to_theta(self, value: np.ndarray | float) -> np.ndarray:
        return np.log(value) if self.log else np.asarray(value, dtype=float)

    def from_theta(self, theta: np.ndarray | float) -> np.ndarray:
        return np.exp(theta) if self.log else np.asarray(theta, dtype=float)

    @property
    def theta_bounds(self) -> tuple[float, float]:
        lo, hi = self.to_theta(self.lower), self.to_theta(self.upper)
        return float(lo), float(hi)


@dataclass(frozen=True)
class Form:
    name: str
    params: tuple[Param, ...]
    fn: FormFn
    description: str = ""

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"form {self.name} has no parameter {name!r}")

    def __call__(self, N, D, Dp, **values) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(self.fn(N, D, Dp, **values), dtype=float)

    def init_grid(self) -> np.ndarray:
        """The cartesian product of the init values, in theta space: (grid size, n params)."""
        axes = [p.to_theta(np.asarray(p.init, dtype=float)) for p in self.params]
        return np.array(list(itertools.product(*axes)), dtype=float)


FORMS: dict[str, Form] = {}


def register_form(
    name: str, params: Sequence[Param], description: str = "", *, replace: bool = False
) -> Callable[[FormFn], FormFn]:
    """Decorator: register ``fn(N, D, Dp, **params)`` as form ``name``."""

    def decorate(fn: FormFn) -> FormFn:
        if name in FORMS and not replace:
            raise ValueError(f"form {name!r} is already registered (pass replace=True)")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"form {name!r}: duplicate parameter names in {names}")
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        FORMS[name] = Form(name, tuple(params), fn, doc)
        return fn

    return decorate


def get_form(name: str) -> Form:
    if name not in FORMS:
        raise KeyError(f"unknown form {name!r}; registered: {', '.join(sorted(FORMS))}")
    return FORMS[name]


def load_plugin(path: str | Path) -> None:
    """Import a Python file whose ``@register_form`` calls add user forms to the registry."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"form plugin {path} does not exist")
    module_name = f"laws_plugin_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)


# ---------------------------------------------------------------------------------------
# Built-in forms. Scales (E, A, B) are fitted in log space, as in Hoffmann et al. 2022.

_E = Param("E", 1e-2, 20.0, (0.5, 1.0, 2.0, 3.0), log=True)
_A = Param("A", 1e-3, 1e12, (1e1, 1e3, 1e5, 1e7, 1e9), log=True)
_B = Param("B", 1e-3, 1e12, (1e1, 1e3, 1e5, 1e7, 1e9), log=True)
_ALPHA = Param("alpha", 0.0, 3.0, (0.1, 0.3, 0.6, 1.0))
_BETA = Param("beta", 0.0, 3.0, (0.1, 0.3, 0.6, 1.0))


@register_form(
    "chinchilla_total",
    params=[_E, _A, _B, _ALPHA, _BETA],
    description="L = E + A/N^alpha + B/(D + D')^beta: every token counts the same",
)
def chinchilla_total(N, D, Dp, E, A, B, alpha, beta):
    return E + A * N**-alpha + B * (D + Dp) ** -beta


@register_form(
    "liew_kato_n",
    params=[
        Param("E", 1e-2, 20.0, (0.5, 1.5, 3.0), log=True),
        Param("A", 1e-3, 1e12, (1e2, 1e5, 1e8), log=True),
        Param("alpha", 0.0, 3.0, (0.2, 0.5, 1.0)),
        Param("B", 1e-3, 1e12, (1e2, 1e5, 1e8), log=True),
        Param("a1", 0.0, 3.0, (0.2, 0.5, 1.0)),
        Param("a2", -1.0, 3.0, (0.05, 0.2, 0.5)),
        Param("a3", -0.1, 0.1, (0.0, 0.005)),
    ],
    description=(
        "L = E + A/N^alpha + B * D^-a1 * (D'+1)^(-a2 + a3 ln D): two-stage law whose "
        "second-stage exponent shrinks as first-stage tokens grow (Liew & Kato 2025, + N)"
    ),
)
def liew_kato_n(N, D, Dp, E, A, alpha, B, a1, a2, a3):
    # (D'+1) makes the second-stage factor exactly 1 at D' = 0: plain pretraining.
    return E + A * N**-alpha + B * D**-a1 * (Dp + 1.0) ** (-a2 + a3 * np.log(D))


# The worth in mixture tokens of a trunk of D tokens and D' specialisation tokens.
_D_EFF = (
    Param("w", 1.0, 1e4, (4.0, 32.0, 256.0), log=True),
    Param("sigma", 1e-2, 1e5, (1.0, 30.0, 1000.0), log=True),
    Param("tau", 1e-3, 1e3, (0.03, 0.3, 3.0), log=True),
)


def effective_tokens(N, D, Dp, w, sigma, tau):
    """D_eff = D + w D' * D/(D + sigma N) * tau D/(tau D + D')."""
    # Transfer readiness D/(D + sigma N) makes splitting pay only after some pretraining
    # (and later for larger N); tau D/(tau D + D') saturates what a fixed trunk can absorb.
    readiness = D / (D + sigma * N)
    saturation = tau * D / (tau * D + Dp)
    return D + w * Dp * readiness * saturation


@register_form(
    "effective_data",
    params=[
        Param("E", 1e-2, 20.0, (0.5, 1.5, 3.0), log=True),
        Param("A", 1e-3, 1e12, (1e2, 1e5, 1e8), log=True),
        Param("alpha", 0.0, 3.0, (0.2, 0.5)),
        Param("B", 1e-3, 1e12, (1e2, 1e5, 1e8), log=True),
        Param("beta", 0.0, 3.0, (0.2, 0.5)),
        *_D_EFF,
    ],
    description=(
        "L = E + A/N^alpha + B/D_eff^beta, D_eff = D + w D' * D/(D + sigma N) * "
        "tau D/(tau D + D'): a specialisation token is worth up to w mixture tokens once the "
        "trunk has seen more than ~sigma tokens per parameter, with diminishing returns "
        "once D' exceeds ~tau D"
    ),
)
def effective_data(N, D, Dp, E, A, alpha, B, beta, w, sigma, tau):
    return E + A * N**-alpha + B * effective_tokens(N, D, Dp, w, sigma, tau) ** -beta


@register_form(
    "kaplan_effective_data",
    params=[
        Param("E", 1e-2, 20.0, (0.5, 1.5, 3.0), log=True),
        Param("Nc", 1e-3, 1e15, (1e2, 1e5, 1e8), log=True),
        Param("alpha", 0.0, 3.0, (0.1, 0.3, 0.6)),
        Param("Dc", 1e-3, 1e15, (1e3, 1e6, 1e9), log=True),
        Param("beta", 0.0, 3.0, (0.1, 0.3, 0.6)),
        *_D_EFF,
    ],
    description=(
        "L = E + ((Nc/N)^(alpha/beta) + Dc/D_eff)^beta, D_eff as in effective_data: "
        "Kaplan et al. 2020's joint form, where size and data do not add up (a bigger model "
        "gains little until it has seen enough tokens), the regime of few tokens per parameter"
    ),
)
def kaplan_effective_data(N, D, Dp, E, Nc, alpha, Dc, beta, w, sigma, tau):
    d_eff = effective_tokens(N, D, Dp, w, sigma, tau)
    return E + ((Nc / N) ** (alpha / beta) + Dc / d_eff) ** beta
