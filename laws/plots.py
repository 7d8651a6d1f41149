"""Plots of a fitted law and the compute split it implies (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, ScalarFormatter  # noqa: E402

from laws.allocate import Allocator  # noqa: E402
from laws.data import LOSS_UNIT, Table  # noqa: E402
from laws.io import write_atomic  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})


def save(fig: Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, lambda f: f.write(buffer.getvalue()))


def human(tokens: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(tokens) >= scale:
            return f"{tokens / scale:.3g}{suffix}"
    return f"{tokens:.3g}"


def _size_colors(sizes: Sequence[float]) -> dict[float, tuple]:
    cmap = plt.get_cmap("viridis")
    ordered = sorted(set(sizes))
    return {n: cmap(i / max(len(ordered) - 1, 1) * 0.9) for i, n in enumerate(ordered)}


def predicted_vs_observed(
    table: Table,
    predicted: np.ndarray,
    title: str,
    path: str | Path,
    heldout: np.ndarray | None = None,
) -> Path:
    """Log-log scatter; ``heldout`` rows (circled) should carry out-of-sample predictions."""
    colors = _size_colors(table.N.tolist())
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for n in sorted(colors):
        for special, marker, label in ((False, "o", "D'=0"), (True, "^", "D'>0")):
            rows = np.equal(table.N, n) & ((table.Dp > 0) == special)
            if rows.any():
                ax.scatter(
                    table.loss[rows],
                    predicted[rows],
                    s=22,
                    marker=marker,
                    color=colors[n],
                    alpha=0.8,
                    label=f"N={human(n)}, {label}",
                )
    if heldout is not None and len(heldout):
        ax.scatter(
            table.loss[heldout],
            predicted[heldout],
            s=70,
            facecolors="none",
            edgecolors="red",
            linewidths=1.2,
            label="held out (fit without them)",
        )
    lo = min(table.loss.min(), predicted.min()) * 0.98
    hi = max(table.loss.max(), predicted.max()) * 1.02
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.set_xlabel(f"observed loss ({LOSS_UNIT})")
    ax.set_ylabel(f"predicted loss ({LOSS_UNIT})")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return save(fig, path)


def loss_vs_fraction(allocator: Allocator, N: float, budgets: Sequence[float], path) -> Path:
    fractions = np.linspace(0.0, 1.0, 401)[1:]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("plasma")
    finite_values = []
    for i, budget in enumerate(budgets):
        values = allocator.loss_at_fraction(N, budget, fractions)
        color = cmap(i / max(len(budgets) - 1, 1) * 0.85)
        ax.plot(fractions, values, color=color, label=f"T = {human(budget)} tokens")
        best_f, best_loss = allocator.optimal_fraction(N, budget)
        ax.plot([best_f], [best_loss], "o", color=color, ms=6, mec="black")
        finite_values.append(values[np.isfinite(values)])
    # Near f = 0 the trunk is untrained and the loss explodes: keep the optimum in view.
    values = np.concatenate(finite_values)
    lo = values.min()
    hi = min(values.max(), lo + 3 * (np.percentile(values, 75) - lo) + 1e-3)
    ax.set_ylim(lo - 0.03 * (hi - lo), hi)
    ax.set_xlabel("fraction of budget spent on pretraining  (D / T)")
    ax.set_ylabel(f"predicted loss ({LOSS_UNIT})")
    k, accounting = allocator.config.k, allocator.config.accounting
    ax.set_title(f"N = {human(N)}, k = {k} ({accounting} cost); dots: optimum")
    ax.legend(fontsize=8)
    return save(fig, path)


def optimal_fraction_vs_budget(allocator: Allocator, curves: dict[float, list], path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = _size_colors(list(curves))
    for n, splits in curves.items():
        budgets = [s.budget for s in splits]
        ax.plot(budgets, [s.fraction for s in splits], color=colors[n], label=f"N = {human(n)}")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("total budget T (tokens)")
    ax.set_ylabel("optimal pretraining fraction D* / T")
    ax.set_title(f"Optimal split, k = {allocator.config.k}")
    ax.legend(fontsize=8)
    return save(fig, path)


def d_split_vs_size(sizes: Sequence[float], d_splits: Sequence[float | None], path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    found = [(n, d) for n, d in zip(sizes, d_splits, strict=True) if d is not None]
    if found:
        ns, ds = zip(*found, strict=True)
        ax.plot(ns, ds, "o-", color="tab:blue", label="D_split")
        ax.plot(ns, [20 * n for n in ns], ":", color="gray", label="20 tokens / parameter")
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=8)
    else:
        ax.set_xscale("log")
        ax.set_xlim(min(sizes) / 2, max(sizes) * 2)
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "splitting never pays\nunder this law",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=12,
        )
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel("pretraining tokens before splitting pays")
    ax.set_title("D_split vs model size")
    return save(fig, path)


def multiplier_vs_budget(curves: dict[float, list], path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = _size_colors(list(curves))
    for n, splits in curves.items():
        budgets = [s.budget for s in splits]
        ax.plot(budgets, [s.multiplier for s in splits], color=colors[n], label=f"N = {human(n)}")
    ax.axhline(1.0, color="gray", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("total budget T (tokens)")
    ax.set_ylabel("tokens standard pretraining needs / T")
    k = next(iter(curves.values()))[0].k
    ax.set_title(f"Compute multiplier of the optimal split, k = {k}")
    ax.legend(fontsize=8)
    return save(fig, path)
