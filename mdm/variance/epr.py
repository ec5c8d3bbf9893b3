"""The EPR density family of P-POTS and its KL fit (METHODS.md section 3).

    p_EPR(t) proportional to sqrt( a t^r + b (1 - t)^q + (A exp(kappa t^m))^2 )

Constraints (the authors' code, not the paper's r, q >= 0, m > 1, kappa > 0):
    a, b, A > 0;  kappa >= 0;  r, q >= 1;  m >= 1.
They are enforced by a softplus reparametrisation x = lower + softplus(theta), theta boxed so that every parameter
stays in [lower, lower + CAP] (CAP = 300; a lower edge is softplus(-40) = 4e-18 above the bound). `at_bound` lists
the parameters the best fit pushed to a box edge (a lower edge is a constraint that binds, e.g. r = 1; an upper edge
means the family wanted a steeper term than the box allows).
Why 300: the only overflow is A^2 exp(2 kappa t^m) <= CAP^2 e^(2 CAP), finite in float64 up to CAP = 349
(OVERFLOW_CAP); 300 keeps a factor e^98 of headroom for the gradient's products. Measured with 20 restarts, seed 0,
on every real pilot we have (`fit_epr(..., cap=c)`; KL relative to the best over caps 40..349):
    Table 1 arith runs' pilot (b = 20, midpoint; tests' SPIKE_W): cap 30 +4.3%, 40 +0.18% (q = 41 at the edge,
        the density up to 6% off on the grid's span), 60..349 +0.000% (q = 43.5 interior)
    Table 1 tables runs' pilot (b = 20), Table 2 text-to-image pilot (b = 20), the arith base's profile (a = 15,
        b = 70, c = 15, midpoint) and its authors'-grid pilots (t = j/b; a = 15, b = 70, c = 15 and a = 8, b = 20,
        c = 4): +0.000% at every cap from 40 (30 for the last, whose kappa is 51 at caps >= 100, 34.5 at 40)
The old cap of 40 bound on the arith pilot: a cap no fit reaches costs nothing, so the cap is the largest with
headroom; the test holds the arith pilot's fit within 1% of the KL at OVERFLOW_CAP.

Fit: minimise KL(w_n || p_n) on the pilot grid, where w_n and p_n are w and p_EPR normalised by the
trapezoid rule on that grid and both are clipped at 1e-12 inside the log; L-BFGS-B (exact gradients
in float64) from `restarts` starting points drawn with a fixed seed (plus an optional
warm start), keep the best. The density is invariant to scaling (a, b, A^2) together, so the seven
parameters are identified only up to that scale: `canonical` reports (a / A^2, b / A^2, kappa, r, q, m).
The KL sees only the pilot grid, so `EPRFit.density` (what P-POTS samples) holds the fit at its edge values
outside the grid's span: on the tiny arith base of 2026-12-06 the unclamped fit put a spike beyond the last
midpoint (t > 0.975; kappa = 40, m = 31) that held most of its mass on [0, 1], and P-POTS+MIRROR trained on it
scored 7% against MIRROR's 63%. `outside_mass` reports the share the clamp removes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

NAMES = ("a", "b", "A", "kappa", "r", "q", "m")
LOWER = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
CAP = 300.0  # every parameter <= its lower bound + CAP (module docstring: why 300)
OVERFLOW_CAP = 349.0  # the largest cap with A^2 exp(2 kappa) finite in float64 (2 ln 349 + 2 * 349 < 709.78)
THETA_LOW = -40.0  # softplus(-40) = 4e-18: a parameter at its lower edge
CLIP = 1e-12
MIN_GRID = 10  # seven parameters need a grid clearly longer than seven points


def _one_blas_thread():
    """L-BFGS-B makes thousands of tiny BLAS calls; a multi-threaded BLAS on a busy machine turns each into
    a thread synchronisation (measured: 6 ms instead of 40 us per step on 2 shared cores)."""
    try:
        # deferred: threadpoolctl is optional (only speed depends on it)
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


class FitError(ValueError):
    """The EPR fit could not produce a finite density (the caller decides: fall back or stop)."""


def softplus(x):
    return np.logaddexp(0.0, x)


def inv_softplus(y):
    y = np.asarray(y, dtype=np.float64)
    return y + np.log(-np.expm1(-y))


def params_of(theta) -> dict[str, float]:
    x = LOWER + softplus(np.asarray(theta, dtype=np.float64))
    return dict(zip(NAMES, map(float, x)))


def theta_high(cap: float = CAP) -> float:
    """The softplus argument at which a parameter reaches its lower bound + `cap`."""
    return float(inv_softplus(cap))


def theta_of(params: dict[str, float], cap: float = CAP) -> np.ndarray:
    x = np.array([params[k] for k in NAMES], dtype=np.float64) - LOWER
    return np.clip(inv_softplus(np.maximum(x, 1e-12)), THETA_LOW, theta_high(cap))


def canonical(params: dict[str, float]) -> dict[str, float]:
    """The identifiable part: (a, b) in units of A^2, and the shape parameters."""
    A2 = params["A"] ** 2
    return {"a/A^2": params["a"] / A2, "b/A^2": params["b"] / A2, "kappa": params["kappa"], "r": params["r"],
            "q": params["q"], "m": params["m"]}


def epr(t, params: dict[str, float]) -> np.ndarray:
    """Unnormalised EPR density at t in [0, 1] (finite and > 0 for valid parameters)."""
    t = np.asarray(t, dtype=np.float64)
    a, b, A, kappa, r, q, m = (params[k] for k in NAMES)
    return np.sqrt(a * t**r + b * (1 - t) ** q + A**2 * np.exp(2 * kappa * t**m))


def _trapz(y, t):
    return ((y[..., 1:] + y[..., :-1]) / 2 * (t[1:] - t[:-1])).sum(-1)


@dataclass
class EPRFit:
    params: dict[str, float]
    kl: float
    converged: bool
    restarts: int
    converged_restarts: int
    message: str = ""
    all_kl: list[float] = field(default_factory=list)
    at_bound: list[str] = field(default_factory=list)
    span: tuple[float, float] = (0.0, 1.0)  # the pilot grid's first and last t: what the fit saw

    @property
    def canonical(self) -> dict[str, float]:
        return canonical(self.params)

    def density(self, t) -> np.ndarray:
        """The fitted density, held at its edge values outside the pilot grid's span: the KL sees only the grid,
        so beyond it the family's shape is unconstrained (a fit can put a spike exp(2 kappa t^m) between the last
        grid point and t = 1 that holds most of the mass, and a sampler would then draw almost only t ~ 1)."""
        return epr(np.clip(np.asarray(t, dtype=np.float64), *self.span), self.params)

    def outside_mass(self, points: int = 2001) -> float:
        """The unclamped EPR's share of its mass on [0, 1] outside the pilot grid's span (what `density` drops)."""
        fine = np.linspace(0.0, 1.0, points)
        p = epr(fine, self.params)
        inside = (fine >= self.span[0]) & (fine <= self.span[1])
        total = _trapz(p, fine)
        return float(1.0 - _trapz(np.where(inside, p, 0.0), fine) / total) if np.isfinite(total) else 1.0

    def to_json(self) -> dict:
        return {"params": self.params, "canonical": self.canonical, "kl": self.kl, "converged": self.converged,
                "restarts": self.restarts, "converged_restarts": self.converged_restarts, "message": self.message,
                "at_bound": self.at_bound, "span": list(self.span), "outside_mass": self.outside_mass()}


def check_target(t, w, where: str = "fit") -> tuple[np.ndarray, np.ndarray]:
    t, w = np.asarray(t, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if t.ndim != 1 or t.shape != w.shape:
        raise FitError(f"{where}: grid and w must be 1-D of the same length")
    if len(t) < MIN_GRID:
        raise FitError(f"{where}: grid too coarse: {len(t)} points; the 7-parameter EPR fit needs at least "
                       f"{MIN_GRID} (raise the pilot's b)")
    if np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] > 1:
        raise FitError(f"{where}: the grid must be strictly increasing inside [0, 1]")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise FitError(f"{where}: w(t) must be finite, >= 0 and not all 0 (got min {np.nanmin(w):.3g}, "
                       f"{int((~np.isfinite(w)).sum())} non-finite)")
    return t, w


def fit_epr(t, w, *, restarts: int = 20, seed: int = 0, init: dict[str, float] | None = None,
            maxiter: int = 1000, cap: float = CAP) -> EPRFit:
    """Fit the EPR family to w on grid t by KL, L-BFGS-B multi-start (deterministic for a seed); every parameter
    stays below its lower bound + `cap` (at most OVERFLOW_CAP)."""
    if not 0 < cap <= OVERFLOW_CAP:
        raise ValueError(f"fit: cap must be in (0, {OVERFLOW_CAP:g}] (larger overflows exp(2 kappa)); got {cap}")
    t, w = check_target(t, w)
    c = np.zeros_like(t)  # trapezoid weights: trapz(y) = c @ y
    c[1:] += np.diff(t) / 2
    c[:-1] += np.diff(t) / 2
    wn = w / (c @ w)
    cw = c * wn
    const = cw @ np.log(np.clip(wn, CLIP, None))
    log_t = np.log(np.where(t > 0, t, 1.0))  # t^r log t -> 0 at t = 0
    log_1mt = np.log(np.where(t < 1, 1 - t, 1.0))

    def objective(theta):
        """KL and its exact gradient in theta (numpy; no autograd in the fit's inner loop)."""
        x = LOWER + softplus(theta)
        a, b, A, kappa, r, q, m = x
        tr, tq, tm = t**r, (1 - t) ** q, t**m
        e = A**2 * np.exp(2 * kappa * tm)
        S = a * tr + b * tq + e
        p = np.sqrt(S)
        Z = c @ p
        kl = const - cw @ np.log(np.clip(p / Z, CLIP, None))
        if not np.isfinite(kl):
            return 1e10, np.zeros(7)
        dS = np.stack([tr, tq, 2 * e / A, 2 * tm * e, a * tr * log_t, b * tq * log_1mt,
                       2 * kappa * tm * log_t * e])  # dS/dx [7, n]
        dp = dS / (2 * p)
        grad = -(dp / p) @ cw + (dp @ c) / Z
        return float(kl), np.nan_to_num(grad * (1 / (1 + np.exp(-theta))))

    rng = np.random.default_rng(seed)
    starts = [theta_of(init, cap)] if init is not None else []
    starts += [rng.uniform(-3.0, 3.0, size=7) for _ in range(restarts)]
    if not starts:
        raise FitError("fit: needs at least one start (restarts >= 1 or an init)")
    best, kls, n_ok = None, [], 0
    high = theta_high(cap)
    bounds = [(THETA_LOW, high)] * 7
    with _one_blas_thread():
        results = [minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-10}) for x0 in starts]
    for res in results:
        kl = float(res.fun) if np.isfinite(res.fun) and res.fun < 1e10 else float("inf")
        kls.append(kl)
        n_ok += bool(res.success) and np.isfinite(kl)
        if np.isfinite(kl) and (best is None or kl < best[0]):
            best = (kl, res)
    if best is None:
        raise FitError(f"fit: none of the {len(starts)} L-BFGS-B starts gave a finite KL")
    kl, res = best
    params = params_of(res.x)
    if not np.all(np.isfinite(epr(t, params))):
        raise FitError("fit: the best EPR parameters give a non-finite density")
    edges = [f"{n}={params[n]:.3g} ({'lower' if th < 0 else 'upper'} edge)" for n, th in zip(NAMES, res.x)
             if th <= THETA_LOW + 1e-6 or th >= high - 1e-6]
    return EPRFit(params, kl, bool(res.success), len(starts), int(n_ok), str(res.message), kls, edges,
                  (float(t[0]), float(t[-1])))
