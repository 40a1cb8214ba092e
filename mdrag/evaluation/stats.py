"""Uncertainty and agreement: bootstrap confidence intervals and Cohen's kappa."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap over rows, seeded so reports are reproducible."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)  # (n_boot,)
    alpha = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Agreement of two binary raters beyond chance: (p_o - p_e) / (1 - p_e)."""
    x, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if x.size == 0:
        return float("nan")
    p_o = float((x == y).mean())
    p_e = float(x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean()))
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)
