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


# Two-sided 5% test at 80% power (normal approximation): z_0.975 + z_0.80.
_Z_ALPHA, _Z_POWER = 1.959964, 0.841621


def paired_power(diffs: Sequence[float]) -> dict[str, float]:
    """For paired differences A - B over n questions: the share of discordant pairs (A and B differ) and the
    smallest mean difference a two-sided 5% test detects with 80% power, (z_a + z_b) * sd(d) / sqrt(n), with
    sd(d) the observed standard deviation of the differences (for a 0/1 metric it grows with discordance)."""
    d = np.asarray([v for v in diffs if v is not None and not np.isnan(v)], dtype=np.float64)
    if d.size < 2:
        return {"n": int(d.size), "discordant": float("nan"), "mde": float("nan")}
    sd = float(d.std(ddof=1))
    return {"n": int(d.size), "discordant": float((d != 0).mean()),
            "mde": (_Z_ALPHA + _Z_POWER) * sd / float(np.sqrt(d.size))}
