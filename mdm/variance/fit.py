"""P-POTS fit: from a Standard pilot's per-t moments to a shared JSON density artifact (METHODS.md section 3).

    w(t) = sqrt(g(t)^2 + v(t))                       the paper's estimator (default)
    w(t) = sqrt(g(t)^2 + v(t) + v_x0(t))             --full-second-moment: E[l^2 | t], with the between-x0
                                                     spread of g(x0, t) the paper's v leaves out
    p*   = EPR density fitted to w by KL (mdm.variance.epr), optionally mixed: (1 - mix) p* + mix

The artifact (`ppots.json`) holds a fine grid on [0, 1] and the normalised density there (what
`GridDensity.load` / the `ppots` t-sampler reads), the EPR parameters, KL, convergence, the pilot's sizes
and moments, and the model and data ids. In training it is fitted once and broadcast (mdm.train.ppots), so every
process samples from the same p(t).

Failure policy (never a silent NaN density):
- w with NaN / inf / negative values, or all zero: ValueError (the pilot is broken; nothing to fit).
- grid with fewer than 10 points: ConfigError naming pilot.b.
- no L-BFGS-B start gives a finite KL: the density falls back to the pilot's w itself (piecewise linear,
  floored at 1e-3 of its maximum), `family` = "empirical", with a warning; `strict` makes it an error.
- the best start did not report convergence: kept, `fit.converged` = false, with a warning; `strict`
  makes it an error.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from mdm.errors import ConfigError
from mdm.variance.epr import MIN_GRID, FitError, check_target, fit_epr

FORMAT = "mdm-ppots-v1"
CONSTRAINTS = "a, b, A > 0; kappa >= 0; r, q >= 1; m >= 1 (authors' code)"


def pilot_w(moments: dict, full_second_moment: bool = False) -> np.ndarray:
    """w_j from per-t moments {g, v, v_x0} (see mdm.variance.estimator.moments_by_t)."""
    g, v = np.asarray(moments["g"], dtype=np.float64), np.asarray(moments["v"], dtype=np.float64)
    m2 = g**2 + v
    if full_second_moment:
        m2 = m2 + np.asarray(moments["v_x0"], dtype=np.float64)
    if not np.all(np.isfinite(m2)):
        raise ValueError(f"the pilot's moments have {int((~np.isfinite(m2)).sum())} non-finite values "
                         f"(NaN/inf losses): check the model and data")
    return np.sqrt(np.clip(m2, 0.0, None))  # the de-biased v_x0 can dip below 0 by noise


def _normalised(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p / (((p[1:] + p[:-1]) / 2) * np.diff(t)).sum()


def fit_ppots(t, moments: dict, *, full_second_moment: bool = False, mix: float = 0.0, restarts: int = 20,
              seed: int = 0, strict: bool = False, points: int = 501, meta: dict | None = None) -> dict:
    """Fit p* to the pilot and return the JSON artifact (a dict; `save` writes it)."""
    if not 0.0 <= mix < 1.0:
        raise ConfigError("fit.mix", f"must be in [0, 1) (got {mix})")
    t = np.asarray(t, dtype=np.float64)
    if len(t) < MIN_GRID:
        raise ConfigError("pilot.b", f"grid too coarse: {len(t)} t values; the 7-parameter EPR fit needs at "
                          f"least {MIN_GRID}")
    w = pilot_w(moments, full_second_moment)
    try:
        t, w = check_target(t, w, "fit")
    except FitError as e:
        raise ValueError(str(e)) from None
    fine = np.linspace(0.0, 1.0, points)
    notes = []
    try:
        fit = fit_epr(t, w, restarts=restarts, seed=seed)
        family, density = "epr", fit.density(fine)
        outside = fit.outside_mass()
        if outside > 0.5:
            notes.append(f"EPR fit: {100 * outside:.0f}% of the fitted density's mass lies outside the "
                         f"pilot grid [{t[0]:.3g}, {t[-1]:.3g}], where the pilot measured nothing; the density is held "
                         "at its edge values there")
        if not fit.converged:
            notes.append(f"EPR fit: the best of {fit.restarts} L-BFGS-B starts did not report convergence "
                         f"({fit.message}); kept it (KL {fit.kl:.3g})")
        fit_json = fit.to_json()
    except FitError as e:
        fit_json, family = {"error": str(e)}, "empirical"
        notes.append(f"EPR fit failed ({e}); fell back to the pilot's w(t) itself (piecewise linear)")
        density = np.interp(fine, t, np.maximum(w, 1e-3 * w.max()))
    if notes and strict:
        raise ValueError("; ".join(notes))
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    density = _normalised(fine, density)
    density = (1 - mix) * density + mix
    if not np.all(np.isfinite(density)) or np.any(density <= 0):  # cannot happen for valid parameters
        raise ValueError("the fitted density is not finite and positive; refusing to write it")
    moments = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in moments.items()}
    return {
        "format": FORMAT,
        "grid": fine.tolist(),
        "density": density.tolist(),
        "family": family,
        "mix": mix,
        "full_second_moment": full_second_moment,
        "constraints": CONSTRAINTS,
        "fit": fit_json,
        "target": {"t": t.tolist(), "w": w.tolist(), **moments},
        "warnings": notes,
        **(meta or {}),
    }


def save(artifact: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact, indent=1))
    return path


def load(path: str | Path) -> dict:
    try:
        artifact = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(str(path), f"cannot read the P-POTS density ({e.strerror}; write one with mdm fit-ppots)") \
            from None
    except ValueError as e:
        raise ConfigError(str(path), f"not valid JSON ({e})") from None
    if not isinstance(artifact, dict) or "grid" not in artifact or "density" not in artifact:
        raise ConfigError(str(path), "not a P-POTS density: needs 'grid' and 'density' (write it with mdm fit-ppots)")
    return artifact
