"""Nested Monte Carlo estimator of the variance decomposition Var = A + B + C (METHODS.md section 2).

Input: a table s[i, j, k] (or s[i, j, k, d] for gradient vectors) of the per-row loss a method
back-propagates, for `a` clean sequences x0_i, `b` grid values t_j and `c` masks per cell, and the law of t
on the grid, q_j (sum 1). Integrals over t are quadratures on the grid with the weights q:

    A = E_{x0, t}[Var_mask(s | x0, t)]   A_hat = mean_i sum_j q_j S2_ij
    B = E_{x0}[Var_t(g(x0, t))]          B_hat = mean_i [sum_j q_j (G_ij - G_i)^2 - sum_j q_j (1 - q_j) S2_ij / c]
    C = Var_{x0}(E_t[g(x0, t)])          C_hat = var_i(G_i) - mean_i sum_j q_j^2 S2_ij / c

with G_ij = mean_k s_ijk, S2_ij the unbiased sample variance over k, G_i = sum_j q_j G_ij. The subtracted
terms remove the mask noise left in G_ij (so every term is unbiased for its quadrature target, not only
consistent); for a vector sample every variance is a trace (sum over the coordinates). Standard errors
come from a bootstrap over x0 (the top level of the nested design carries all the noise below it), with
a fixed seed, so the whole estimate is deterministic.

How a method's "sample" enters (decided here, tested in tests/variance/test_variance_estimator.py):

- Mask builders, token-rate rules and eligibility change the table: s is the row loss the method
  back-propagates (e.g. MIRROR: the mean of its two views), drawn at each fixed t_j.
- A t-sampler changes the law of t and the sample's weight. With uniform quadrature weights pi_j and a
  t-sampler of density p, the grid law is q_j = pi_j p(t_j) / sum_j pi_j p(t_j) and an importance-weighted
  sampler (P-POTS) multiplies the loss by pi_j / q_j (= 1/p(t_j) up to the grid's normalisation), so the
  mean over the grid law is exactly Standard's quadrature mean (unbiased on the grid). P-POTS's B is then
  Var_{t~q}(g(t) / p(t)), its A is sum_j q_j Var(l | t_j) / p(t_j)^2, and its C equals Standard's.
- StraTS (u-source `strats`) does not change a single sample's law; it reduces the variance of the mean
  of a batch of n rows. Every method is therefore also reported in a *batch view*: n * Var(batch mean),
  a per-sample equivalent that equals the single-sample value for i.i.d. t. With k strata (default
  round(sqrt(n))) in u = F(t), n // k rows per stratum and the remainder r = n mod k given to random
  strata, n * Var(batch mean) = total - phi * Var_h(mu_h), phi = 1 - r (k - r) / (n (k - 1)), where mu_h
  is the mean sample in stratum h (strata are formed on the grid from the cumulative q). The reduction is
  assigned to B (it is rate noise): B_batch = B - phi * Var_h(mu_h), with Var_h(mu_h) de-biased like C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mdm.errors import ConfigError

TERMS = ("A", "B", "C", "total")


def check_sizes(a: int, b: int, c: int, where: str = "pilot") -> None:
    """The nested design needs two of everything it takes a variance over."""
    if a < 2:
        raise ConfigError(f"{where}.a", f"must be >= 2: C is a variance over clean sequences x0 (got a={a})")
    if b < 2:
        raise ConfigError(f"{where}.b", f"must be >= 2: B is a variance over the t grid (got b={b})")
    if c < 2:
        raise ConfigError(f"{where}.c", f"must be >= 2: A is a variance over masks at fixed (x0, t) (got c={c})")


def t_grid(b: int, kind: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """Grid of t and its uniform quadrature weights pi (sum 1).

    midpoint: t_j = (j - 1/2) / b, j = 1..b (b points, the midpoint rule; the pilot costs exactly a*b*c).
    authors:  t_j = j / b, j = 1..b-1 (the authors' P-POTS grid, support [1/b, 1 - 1/b]; b - 1 points).
    """
    if kind == "midpoint":
        t = (np.arange(b) + 0.5) / b
    elif kind == "authors":
        if b < 3:
            raise ConfigError("pilot.b", f"the authors' grid j/b, j=1..b-1 needs b >= 3 (got {b})")
        t = np.arange(1, b) / b
    else:
        raise ConfigError("pilot.grid", f"unknown grid {kind!r}; allowed: midpoint, authors")
    return t, np.full(len(t), 1.0 / len(t))


def strata_of(q: np.ndarray, k: int) -> np.ndarray:
    """Stratum index of each grid point: floor(k * F_j), F_j the cumulative q at the point's middle."""
    mid = np.cumsum(q) - q / 2
    return np.minimum((mid * k).astype(int), k - 1)


@dataclass
class BatchView:
    """Stratified u over a global batch of n rows (StraTS); strata=None means i.i.d. t (no change)."""

    n: int
    k: int | None = None  # None: i.i.d. u; else the number of strata

    @classmethod
    def of(cls, u_source: str, n: int, k: int | None) -> BatchView:
        if u_source == "uniform":
            return cls(n)
        if u_source == "strats":
            return cls(n, min(k or max(1, round(math.sqrt(n))), n))
        raise ConfigError("method.t_sampler.u", f"the profiler's batch view supports u = uniform or strats; "
                          f"{u_source!r} (systematic, correlated rows) is not supported")

    @property
    def phi(self) -> float:
        if self.k is None or self.k < 2:
            return 0.0
        r = self.n % self.k
        return 1.0 - r * (self.k - r) / (self.n * (self.k - 1))


class _PerX0:
    """Per-x0 sufficient statistics, so the bootstrap only resamples rows of small arrays."""

    def __init__(self, s: np.ndarray, q: np.ndarray, view: BatchView, low: np.ndarray | None):
        a, b, c = s.shape[:3]
        s = s.reshape(a, b, c, -1).astype(np.float64)
        # variances are shift-invariant: shifting each cell by its first value (and each x0 by its first
        # cell) makes a constant cell or a t-independent x0 give exactly 0, not rounding noise
        S2 = (s - s[:, :, :1]).var(2, ddof=1).sum(-1)  # [a, b] (trace)
        self.G = s.mean(2)  # [a, b, D]
        self.Gi = np.einsum("j,ijd->id", q, self.G)  # [a, D], for C
        G = self.G - self.G[:, :1]  # shifted per x0, for B and the strata
        Gi = np.einsum("j,ijd->id", q, G)
        dev = ((G - Gi[:, None]) ** 2).sum(-1)  # [a, b]
        self.S2, self.view = S2, view
        self.A = (q * S2).sum(1)
        low_mass = 0.0 if low is None else float((q * low).sum())
        self.A_low = (q * low * S2).sum(1) / low_mass if low_mass > 0 else None
        self.B = (q * dev).sum(1) - (q * (1 - q) * S2).sum(1) / c
        self.C_noise = (q**2 * S2).sum(1) / c
        self.mass = None
        if view.k and view.k >= 2:
            onehot = np.eye(view.k)[strata_of(q, view.k)]  # [b, k]
            mass = onehot.T @ q  # [k]
            keep = mass > 0
            self.mass = mass[keep]
            m = np.einsum("jh,j,ijd->ihd", onehot[:, keep], q, G) / self.mass[None, :, None]  # [a, k', D]
            self.m, self.d = m, m - Gi[:, None, :]  # stratum means, and their deviation from the x0's mean

    def terms(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """A, B, C, total (single sample) and their batch views for index sets idx [R, a]."""
        n = idx.shape[1]
        A = self.A[idx].mean(1)
        B = self.B[idx].mean(1)
        Gi = self.Gi[idx]  # [R, a, D]
        C = ((Gi - Gi.mean(1, keepdims=True)) ** 2).sum((1, 2)) / (n - 1) - self.C_noise[idx].mean(1)
        out = {"A": A, "B": B, "C": C, "total": A + B + C}
        if self.A_low is not None:
            out["A_low_t"] = self.A_low[idx].mean(1)
        if self.mass is not None:
            m = self.m[idx]  # [R, a, k, D]
            mu = m.mean(1)  # [R, k, D]
            center = np.einsum("h,rhd->rd", self.mass, mu)
            between = np.einsum("h,rh->r", self.mass, ((mu - center[:, None]) ** 2).sum(-1))
            noise = np.einsum("h,rh->r", self.mass, self.d[idx].var(1, ddof=1).sum(-1)) / n
            B_batch = B - self.view.phi * (between - noise)
        else:
            B_batch = B
        out |= {"A_batch": A, "B_batch": B_batch, "C_batch": C, "total_batch": A + B_batch + C}
        return out


def decompose(s: np.ndarray, q: np.ndarray | None = None, *, t: np.ndarray | None = None,
              view: BatchView | None = None, bootstrap: int = 500, seed: int = 0) -> dict:
    """A, B, C, total with bootstrap standard errors, for a table s [a, b, c] or [a, b, c, d].

    Returns the batch view as the headline numbers (`A`, `B`, `C`, `total`, `*_se`) and the single-sample
    view under `sample`; both agree unless `view` stratifies. Also the per-t curves of the sample:
    `g` (mean, or norm of the mean vector), `A_by_t` (mean over x0 of the within-cell variance, i.e. the
    pattern noise at t_j, whose q-weighted sum is A) and, given the grid `t`, `A_low_t`: A restricted to
    t < 1/2 (q renormalised there), where MIRROR's views are disjoint and its theorem applies.
    """
    s = np.asarray(s, dtype=np.float64)
    if s.ndim not in (3, 4):
        raise ValueError(f"expected a table [a, b, c] or [a, b, c, d], got shape {s.shape}")
    a, b, c = s.shape[:3]
    check_sizes(a, b, c)
    if not np.all(np.isfinite(s)):
        bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"the pilot table has {bad} non-finite values (NaN/inf losses): check the model and data")
    q = np.full(b, 1.0 / b) if q is None else np.asarray(q, dtype=np.float64)
    if q.shape != (b,) or np.any(q < 0) or not math.isclose(q.sum(), 1.0, rel_tol=1e-9):
        raise ValueError("q must be b non-negative grid weights summing to 1")
    view = view or BatchView(n=1)
    stats = _PerX0(s, q, view, None if t is None else np.asarray(t) < 0.5)
    point = {k: float(v[0]) for k, v in stats.terms(np.arange(a)[None]).items()}
    rng = np.random.default_rng(seed)
    reps = {k: [] for k in point}
    for start in range(0, bootstrap, 64):
        idx = rng.integers(0, a, size=(min(64, bootstrap - start), a))
        for k, v in stats.terms(idx).items():
            reps[k].append(v)
    se = {k: float(np.concatenate(v).std(ddof=1)) if bootstrap > 1 else float("nan") for k, v in reps.items()}
    out = {}
    for term in TERMS:
        out[term], out[f"{term}_se"] = point[f"{term}_batch"], se[f"{term}_batch"]
    out["sample"] = {k: point[k] for k in TERMS} | {f"{k}_se": se[k] for k in TERMS}
    if "A_low_t" in point:
        out["A_low_t"], out["A_low_t_se"] = point["A_low_t"], se["A_low_t"]
    mean_vec = stats.G.mean(0)  # [b, D]
    out["g"] = (mean_vec[:, 0] if mean_vec.shape[1] == 1 else np.linalg.norm(mean_vec, axis=1)).tolist()
    out["A_by_t"] = stats.S2.mean(0).tolist()
    out["batch"] = {"n": view.n, "strata": view.k, "phi": view.phi}
    # bootstrap replicates (same resampled x0 for every table of the same a, seed and size), so two
    # methods measured on the same clean sequences can be compared pairwise (see `paired_ratio`)
    out["replicates"] = {k: np.concatenate(v) for k, v in reps.items() if v}
    return out


def paired_ratio(num: dict, den: dict, term: str) -> tuple[float, float]:
    """Ratio num[term] / den[term] and its paired-bootstrap SE (both from `decompose` with one seed)."""
    key = f"{term}_batch" if term in TERMS else term
    value = num[term] / den[term]
    a, b = num["replicates"].get(key), den["replicates"].get(key)
    if a is None or b is None or len(a) < 2 or len(a) != len(b):
        return value, float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return value, float(np.nanstd(a / b, ddof=1))


def moments_by_t(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Per-t moments of the unweighted loss table l[a, b, c] for P-POTS (METHODS.md section 3).

    g_j = mean_{i,k} l;  v_j = mean_i var_k l (the paper's v, within x0);
    v_x0_j = var_i(mean_k l) - mean_i var_k l / c (the between-x0 spread of g(x0, t_j), de-biased),
    so g^2 + v + v_x0 estimates the full second moment E[l^2 | t]. For a table of vectors [a, b, c, d]
    g is the norm of the mean vector and the variances are traces (g^2 + v + v_x0 = E||l||^2 again)."""
    raw = np.asarray(raw, dtype=np.float64)
    a, b, c = raw.shape[:3]
    raw = raw.reshape(a, b, c, -1)
    cell_mean = raw.mean(2)  # [a, b, D]
    v = (raw - raw[:, :, :1]).var(2, ddof=1).sum(-1).mean(0)  # shifted: a constant cell gives exactly 0
    mean = cell_mean.mean(0)
    g = mean[:, 0] if mean.shape[1] == 1 else np.linalg.norm(mean, axis=1)
    v_x0 = cell_mean.var(0, ddof=1).sum(-1) - v / c
    return {"g": g, "v": v, "v_x0": v_x0}
