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
from dataclasses import dataclass
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


# --- seed-paired comparisons ---------------------------------------------------------------------------------------
# A seed fixes a run's data order (and, for uniform-t methods, its t draws), so methods run on the same seeds are
# paired: a comparison is a *contrast* C = sum_m w_m * outcomes_m computed seed by seed (and prompt by prompt) on the
# seeds every compared row ran, and its interval comes from C's own seed and prompt variation. What the methods share
# through the seed cancels; the unpaired `bootstrap_interval` above counts each method's seed noise separately.

@dataclass(frozen=True)
class Contrast:
    """A paired contrast on common seeds: estimate, 95% interval, two-sided p, and how it was computed."""
    estimate: float
    lo: float
    hi: float
    p: float
    se: float
    df: float
    n_seeds: int
    prompts: int | None

    @property
    def interval(self) -> str:
        return "-" if np.isnan(self.lo) else f"[{self.lo:+.2f}, {self.hi:+.2f}]"

    @property
    def method(self) -> str:
        if self.prompts:
            return (f"paired on {self.n_seeds} common seeds x {self.prompts} prompts: two-way random effects "
                    f"(seed + prompt), t with {self.df:.1f} Satterthwaite df")
        return f"paired t on {self.n_seeds} common seeds (per-seed scores), {self.df:.0f} df"


def mixed_contrast(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, variance, df) of the grand mean of contrast tables c[..., seeds, prompts] under the two-way random
    effects model c = mu + u_seed + v_prompt + e: var = s2_u / k + s2_v / P + s2_e / (k P) from the ANOVA mean
    squares (components truncated at 0), df by Satterthwaite. Vectorised over leading axes (simulation tests)."""
    k, p = c.shape[-2:]
    rows, cols, grand = c.mean(-1, keepdims=True), c.mean(-2, keepdims=True), c.mean((-2, -1), keepdims=True)
    ms_r = p * ((rows - grand) ** 2).sum((-2, -1)) / (k - 1)
    ms_c = k * ((cols - grand) ** 2).sum((-2, -1)) / (p - 1)
    ms_e = ((c - rows - cols + grand) ** 2).sum((-2, -1)) / ((k - 1) * (p - 1))
    # var * k * p = a_r * ms_r + a_c * ms_c + a_e * ms_e, each component kept only where it is estimated positive
    a_r, a_c = (ms_r > ms_e).astype(float), (ms_c > ms_e).astype(float)
    a_e = 1 - a_r - a_c
    terms = np.stack([a_r * ms_r, a_c * ms_c, a_e * ms_e])
    dofs = np.array([k - 1, p - 1, (k - 1) * (p - 1)], float).reshape(3, *([1] * ms_r.ndim))
    total = terms.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(total > 0, total**2 / (terms**2 / dofs).sum(0), np.inf)
    return grand[..., 0, 0], total / (k * p), df


def _contrast_of(table: np.ndarray, scale: float, level: float) -> Contrast:
    if table.ndim == 2:
        k, prompts = table.shape
        if k < 2:
            return Contrast(scale * float(table.mean()), np.nan, np.nan, np.nan, np.nan, np.nan, k, prompts)
        est, var, df = (float(x) for x in mixed_contrast(table))
    else:
        k, prompts = len(table), None
        if k < 2:
            return Contrast(scale * float(table.mean()), np.nan, np.nan, np.nan, np.nan, np.nan, k, None)
        est, var, df = float(table.mean()), float(table.var(ddof=1) / k), k - 1.0
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0:  # every seed's contrast is the same number: identical rows give a zero-width interval at 0
        return Contrast(scale * est, scale * est, scale * est, 1.0 if est == 0 else 0.0, 0.0, df, k, prompts)
    q = student_t.ppf(0.5 + level / 2, df)
    p = float(2 * student_t.sf(abs(est) / se, df))
    return Contrast(scale * est, scale * (est - q * se), scale * (est + q * se), p, scale * se, df, k, prompts)


def contrast(groups: dict[str, np.ndarray], weights: dict[str, float], scale: float = 100.0,
             level: float = 0.95) -> Contrast:
    """The paired contrast sum_m weights[m] * mean(groups[m]) (times `scale`) with its interval and p. Groups: arrays
    on the same common seeds in the same row order, all [seeds, prompts] on the same prompts or all 1-D per-seed
    scores (`mdm.report.tables.aligned` builds them)."""
    tables = [np.asarray(groups[m], float) for m in weights]
    if len({t.shape for t in tables}) != 1:
        raise ValueError(f"groups are not on the same seeds and prompts (shapes {sorted({t.shape for t in tables})})")
    return _contrast_of(sum(w * t for w, t in zip(weights.values(), tables)), scale, level)


def flip_masks(k: int, n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Every swap pattern of k seed pairs ([2**k, k] booleans; the first row swaps nothing) up to k = 16, else n
    random ones after the identity."""
    if k <= 16:
        return ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(bool)
    rng = np.random.default_rng(seed)
    return np.vstack([np.zeros((1, k), bool), rng.random((n, k)) < 0.5])


def paired_flip_p(a, b, statistic=None, alternative: str = "two-sided") -> float:
    """Randomisation p of statistic(a, b) (default mean(a - b)) under the paired null that, seed by seed, the two
    runs' labels are exchangeable: every swap of a seed's pair (exact up to 16 seeds). Resolution: 1 / 2**k one-sided,
    2 / 2**k two-sided for a statistic that swapping every pair negates (`min_p`)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    statistic = statistic or (lambda x, y: (x - y).mean(-1))
    masks = flip_masks(len(a))
    x, y = np.where(masks, b, a), np.where(masks, a, b)
    values, observed = statistic(x, y), statistic(a, b)
    tol = 1e-9 * max(1.0, abs(observed))
    if alternative == "greater":
        return float(np.mean(values >= observed - tol))
    if alternative == "less":
        return float(np.mean(values <= observed + tol))
    return float(np.mean(np.abs(values) >= abs(observed) - tol))


def min_p(k: int, alternative: str = "two-sided") -> float:
    """The smallest p the exact paired randomisation test can give with k seeds."""
    return (1 if alternative != "two-sided" else 2) / 2**k if k <= 16 else 1 / 20_001


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), nan entries left out of the family."""
    p = np.asarray(p, float)
    out, ok = np.full_like(p, np.nan), ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q)
    adj = np.maximum.accumulate((len(q) - np.arange(len(q))) * q[order]).clip(max=1)
    res = np.empty_like(q)
    res[order] = adj
    out[ok] = res
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), nan entries left out of the family."""
    p = np.asarray(p, float)
    out, ok = np.full_like(p, np.nan), ~np.isnan(p)
    q = p[ok]
    m, order = len(q), np.argsort(q)
    adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * q[order[::-1]])[::-1].clip(max=1)
    res = np.empty_like(q)
    res[order] = adj
    out[ok] = res
    return out


def arcsine(score_percent) -> np.ndarray:
    """The variance-stabilising scale of an accuracy (binomial noise 1 / (4 n) whatever the accuracy), in radians."""
    return np.arcsin(np.sqrt(np.clip(np.asarray(score_percent, float) / 100, 0, 1)))


def f_ratio(var_a, dof_a: int, var_b, dof_b: int, level: float = 0.95):
    """SD ratio sqrt(var_a / var_b) of two independent samples' variances, its F interval (normal seeds) and the
    one-sided p of 'a's SD exceeds b's' (elementwise over arrays; nan where var_b is 0)."""
    from scipy.stats import f  # deferred: scipy.stats.f, only for this interval

    var_a, var_b = np.asarray(var_a, float), np.asarray(var_b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(var_b > 0, var_a / np.where(var_b > 0, var_b, 1), np.nan)
    lo, hi = ratio / f.ppf(0.5 + level / 2, dof_a, dof_b), ratio / f.ppf(0.5 - level / 2, dof_a, dof_b)
    return np.sqrt(ratio), np.sqrt(lo), np.sqrt(hi), f.sf(ratio, dof_a, dof_b)


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))


def pitman_morgan(x, y, level: float = 0.95):
    """SD ratio sd(x) / sd(y) of *paired* samples (the same seeds, last axis), its Pitman-Morgan interval and the
    one-sided p of 'x's SD is below y's' (corr(x + y, x - y) = 0 under equal variances; t with n - 2 df, bivariate
    normal seeds). Elementwise over leading axes; nan with fewer than 3 pairs or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.shape[-1]
    if n < 3:
        return (np.full(x.shape[:-1], np.nan),) * 4
    vx, vy = x.var(-1, ddof=1), y.var(-1, ddof=1)
    ok = (vx > 0) & (vy > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ok, vx / np.where(ok, vy, 1), np.nan)
        r, rho = _corr(x, y), np.clip(_corr(x + y, x - y), -1, 1)
        q = student_t.ppf(0.5 + level / 2, n - 2)
        k = 1 + 2 * (1 - r**2) * q**2 / (n - 2)
        lo, hi = ratio * (k - np.sqrt(k**2 - 1)), ratio * (k + np.sqrt(k**2 - 1))
        t = rho * np.sqrt(n - 2) / np.sqrt(1 - rho**2)
    p = np.where(ok, student_t.cdf(t, n - 2), np.nan)
    return np.sqrt(ratio), np.sqrt(lo), np.sqrt(hi), p
