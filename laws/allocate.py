"""Choose the compute split with a fitted law.

Cost of a split family: D + k * D' tokens (one trunk shared by k specialists; the default,
``accounting="total"``) or D + D' (``"per-model"``: what one specialist saw). A budget T
spent with pretraining fraction f gives D = f T and D' = (1 - f) T / c, c = k or 1.

- optimal split: argmin over f of L(N, fT, (1 - f)T / c) (dense grid, then a bounded
  1-d refinement around the best grid point);
- D_split(N): the pretraining tokens after which splitting pays off: the smallest trunk D
  at which spending the next ``probe`` x D tokens of budget on specialisation lowers the
  loss more than spending them on more pretraining;
- compute multiplier: T_std / T, where standard pretraining (D' = 0) needs T_std tokens
  to reach the optimal split's loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar

LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
ACCOUNTING = ("total", "per-model")


@dataclass(frozen=True)
class Split:
    N: float
    budget: float
    k: int
    accounting: str
    D_star: float
    D_prime_star: float
    fraction: float
    loss_star: float
    loss_pretrain_only: float
    multiplier: float
    D_split: float | None

    def to_json(self) -> dict[str, float | int | str | None]:
        return asdict(self)


@dataclass
class AllocationConfig:
    k: int = 16
    accounting: str = "total"
    probe: float = 0.01
    n_fractions: int = 2001

    def __post_init__(self) -> None:
        if self.accounting not in ACCOUNTING:
            raise ValueError(f"accounting must be one of {ACCOUNTING}, got {self.accounting!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    @property
    def cost_per_dp(self) -> float:
        return float(self.k) if self.accounting == "total" else 1.0

    def build(self, loss: LossFn) -> Allocator:
        return Allocator(loss, self)


class Allocator:
    def __init__(self, loss: LossFn, config: AllocationConfig) -> None:
        self._loss = loss
        self.config = config
        self._d_split: dict[float, float | None] = {}  # per N: budget curves reuse it

    def loss(self, N, D, Dp) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = np.asarray(self._loss(N, D, Dp), dtype=float)
        return np.where(np.isfinite(out), out, np.inf)

    def loss_at_fraction(self, N: float, budget: float, fraction) -> np.ndarray:
        f = np.asarray(fraction, dtype=float)
        return self.loss(N, f * budget, (1.0 - f) * budget / self.config.cost_per_dp)

    def _fraction_grid(self) -> np.ndarray:
        # Dense near both ends: optima at f ~ 1 - 1e-4 or f ~ 1e-4 are common.
        n = self.config.n_fractions
        tail = np.geomspace(1e-7, 0.5, n // 4)
        return np.unique(np.concatenate([np.linspace(0.0, 1.0, n), tail, 1.0 - tail]))

    def optimal_fraction(self, N: float, budget: float) -> tuple[float, float]:
        grid = self._fraction_grid()
        values = self.loss_at_fraction(N, budget, grid)
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        best_f, best_loss = float(grid[i]), float(values[i])
        if hi > lo:
            res = minimize_scalar(
                lambda f: float(self.loss_at_fraction(N, budget, f)),
                bounds=(lo, hi),
                method="bounded",
                options={"xatol": 1e-10},
            )
            if res.fun < best_loss:
                best_f, best_loss = float(res.x), float(res.fun)
        return best_f, best_loss

    def tokens_to_reach(self, N: float, target: float, around: float) -> float:
        """Pretraining-only tokens T_std with L(N, T_std, 0) = target (inf: unreachable)."""

        def gap(log_d: float) -> float:
            return float(self.loss(N, np.exp(log_d), 0.0)) - target

        lo, hi = np.log(around) - 30.0, np.log(around) + 30.0
        if gap(hi) > 0:
            return float("inf")
        if gap(lo) < 0:
            return 0.0
        return float(np.exp(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-12)))

    def split_pays(self, N: float, D) -> np.ndarray:
        """At trunk D: is the next probe*D of budget better spent on D' than on D?"""
        D = np.asarray(D, dtype=float)
        extra = self.config.probe * D
        on_specialist = self.loss(N, D, extra / self.config.cost_per_dp)
        on_pretraining = self.loss(N, D + extra, 0.0)
        return on_specialist < on_pretraining

    def d_split(self, N: float) -> float | None:
        """Smallest D (tokens) after which splitting pays; None if never in N*[1e-2, 1e7]."""
        if N not in self._d_split:
            self._d_split[N] = self._find_d_split(N, 1e-2, 1e7)
        return self._d_split[N]

    def _find_d_split(self, N: float, lo_ratio: float, hi_ratio: float) -> float | None:
        grid = np.geomspace(lo_ratio * N, hi_ratio * N, 400)
        pays = self.split_pays(N, grid)
        if not pays.any():
            return None
        i = int(np.argmax(pays))
        if i == 0:
            return float(grid[0])

        def margin(log_d: float) -> float:
            d = np.exp(log_d)
            extra = self.config.probe * d
            return float(
                self.loss(N, d, extra / self.config.cost_per_dp) - self.loss(N, d + extra, 0.0)
            )

        return float(np.exp(brentq(margin, np.log(grid[i - 1]), np.log(grid[i]), xtol=1e-10)))

    def plan(self, N: float, budget: float) -> Split:
        fraction, loss_star = self.optimal_fraction(N, budget)
        loss_pretrain = float(self.loss(N, budget, 0.0))
        t_std = self.tokens_to_reach(N, loss_star, budget)
        return Split(
            N=float(N),
            budget=float(budget),
            k=self.config.k,
            accounting=self.config.accounting,
            D_star=fraction * budget,
            D_prime_star=(1.0 - fraction) * budget / self.config.cost_per_dp,
            fraction=fraction,
            loss_star=loss_star,
            loss_pretrain_only=loss_pretrain,
            multiplier=t_std / budget,
            D_split=self.d_split(N),
        )

    def budget_curve(self, N: float, budgets) -> list[Split]:
        return [self.plan(N, float(b)) for b in budgets]

    def d_split_curve(self, sizes) -> list[float | None]:
        return [self.d_split(float(n)) for n in sizes]


def interval(samples: list[float | None]) -> list[float] | None:
    """95% percentile interval of bootstrap values; None when any replicate has none."""
    if not samples or any(s is None or not np.isfinite(s) for s in samples):
        return None
    return [float(v) for v in np.percentile(np.array(samples, dtype=float), [2.5, 97.5])]
