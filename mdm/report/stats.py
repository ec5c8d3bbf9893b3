"""Paired intervals for method comparisons: a bootstrap over seeds and prompts, and a permutation test over seeds.

A run's score is the mean of its per-prompt outcomes, and every method and seed is scored on the same prompts.
Per method, the outcome of seed s on prompt p is modelled as mean + seed effect u_s + prompt effect v_p + noise
(two-way random effects). A method's grand mean then varies through its seeds (var(u) / seeds), its prompts and
the noise; across two methods the prompt effects are shared and largely cancel: the comparison is *paired*.

`bootstrap_means` draws, per bootstrap replicate, one resample of the prompts used by every method (so the
prompt part of a difference is resampled as a paired difference), plus, per method, an independent resample
of its seed effects, shrunk so that their variance is the seed component alone (the two-way ANOVA estimate
(MS_seeds - MS_residual) / prompts; resampling whole seed rows would count the per-prompt noise twice and
give intervals that cover ~99% instead of 95%). `tests/report/test_report_stats.py` checks the coverage by simulation.

    lo, hi = bootstrap_interval({"a": A, "s": S}, lambda m: m["a"] - m["s"])   # A, S: [seeds, prompts] arrays
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
from scipy.stats import t as student_t


def seed_component(g: np.ndarray) -> float:
    """Two-way ANOVA estimate of the seed-effect variance of a [seeds, prompts] outcome table (>= 0)."""
    k, p = g.shape
    if k < 2:
        return 0.0
    rows, cols, grand = g.mean(1, keepdims=True), g.mean(0, keepdims=True), g.mean()
    ms_rows = p * ((rows - grand) ** 2).sum() / (k - 1)
    ms_res = ((g - rows - cols + grand) ** 2).sum() / ((k - 1) * (p - 1)) if p > 1 else 0.0
    return max(float(ms_rows - ms_res) / p, 0.0)


def _seed_draws(effects: np.ndarray, target_var: float, rng, n: int) -> np.ndarray:
    """n bootstrap means of `effects` resampled with replacement, scaled so their variance is target_var / k
    (times the small-sample widening below)."""
    k = len(effects)
    spread = effects.var(ddof=1) if k > 1 else 0.0
    if spread <= 0 or target_var <= 0:
        return np.zeros(n)
    # widened by t(k - 1) / z: the seed variance is itself estimated from k - 1 degrees of freedom
    widen = student_t.ppf(0.975, k - 1) / student_t.ppf(0.975, np.inf)
    scaled = widen * effects * np.sqrt(target_var * k / ((k - 1) * spread))
    return scaled[rng.integers(0, k, size=(n, k))].mean(1)


def bootstrap_means(groups: dict[str, np.ndarray], n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """Per group, `n` bootstrap draws of its grand mean. A group is a [seeds, prompts] array of outcomes (every
    group on the same prompts, in the same column order), or a 1-D array of per-seed scores when no per-prompt
    outcomes are kept (then only seeds are resampled, rescaled by sqrt(k / (k - 1)) for an unbiased variance)."""
    rng = np.random.default_rng(seed)
    groups = {name: np.asarray(g, dtype=float) for name, g in groups.items()}
    widths = {g.shape[1] for g in groups.values() if g.ndim == 2}
    if len(widths) > 1:
        raise ValueError(f"groups are not on the same prompts (widths {sorted(widths)})")
    prompts = rng.integers(0, next(iter(widths)), size=(n, next(iter(widths)))) if widths else None
    out = {}
    for name, g in groups.items():
        if g.ndim == 1:
            out[name] = g.mean() + _seed_draws(g - g.mean(), g.var(ddof=1) if len(g) > 1 else 0.0, rng, n)
            continue
        rows = g.mean(1)
        out[name] = g.mean(0)[prompts].mean(1) + _seed_draws(rows - rows.mean(), seed_component(g), rng, n)
    return out


def bootstrap_interval(groups: dict[str, np.ndarray], statistic: Callable[[dict], np.ndarray],
                       n: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of statistic(means) over the paired bootstrap draws of `bootstrap_means`."""
    values = statistic(bootstrap_means(groups, n, seed))
    tail = 100 * (1 - level) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def permutation_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided permutation p-value for mean(a) != mean(b) over per-seed scores: every relabelling of the
    pooled seeds into groups of the original sizes (exact up to 16 seeds in all, else 20,000 random ones)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled, k = np.concatenate([a, b]), len(a)
    if len(pooled) <= 16:
        sums = np.array([pooled[list(c)].sum() for c in combinations(range(len(pooled)), k)])
    else:
        rng = np.random.default_rng(0)
        sums = np.array([pooled[rng.permutation(len(pooled))[:k]].sum() for _ in range(20_000)])
    diffs = np.abs(sums / k - (pooled.sum() - sums) / (len(pooled) - k))
    return float(np.mean(diffs >= abs(a.mean() - b.mean()) - 1e-12))
