"""`mdm variance` and `mdm fit-ppots` end to end: pilot tables -> decomposition per method -> JSON + plots.

Per method (variance.json, `methods.NAME`):
    A, B, C, total (+ _se)  batch view: n * Var(mean of a global batch of n rows), a per-sample
                            equivalent; equal to the single-sample view except for stratified t (StraTS)
    sample                  the single-sample decomposition (+ _se)
    A_low_t (+ _se)         A restricted to t < 1/2 (MIRROR's theorem: at most half of Standard's)
    t, q, w                 grid, law of t on the grid, weight of the loss at t_j (1/p(t_j) for P-POTS)
    g, v, v_x0              per-t moments of the unweighted loss l: mean, within-x0 variance (the paper's
                            v), between-x0 spread (g^2 + v + v_x0 = E[l^2 | t])
    A_by_t                  pattern noise of the back-propagated sample w(t) l at t_j (sum_j q_j A_by_t_j = A)
    passes                  forward/backward passes per row in training (MIRROR, multisample2: 2)
In gradient mode the samples are gradient vectors and every variance is a trace (see mdm.variance.gradient).
Methods that differ only in their t-sampler share one pilot table (mdm.variance.pilot); `arm` is the
causal twin (C only). Control variates are not profiled (the sample is the row loss before the offset;
the EMA control variate is gradient-neutral, so its gradient variance is Standard's).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from mdm.errors import ConfigError
from mdm.objective import MDMBatch, Method
from mdm.objective.components.t_samplers import PPOTS, GridDensity
from mdm.variance import fit as fitting
from mdm.variance.estimator import BatchView, check_sizes, decompose, moments_by_t, paired_ratio, t_grid
from mdm.variance.gradient import LinearGradients
from mdm.variance.pilot import PilotRun, run_arm, run_mdm, t_law, table_key

ARM = "arm"


def build_method(spec, where: str = "methods") -> Method:
    method = Method.build(spec, where)
    if method.control_variate.name != "none":
        warnings.warn(f"{where}: the control variate {method.control_variate.name!r} is not profiled (the sample "
                      f"is the row loss before its offset)", RuntimeWarning, stacklevel=2)
    return method


def install_density(sampler: PPOTS, artifact: dict) -> None:
    """Give an 'auto' P-POTS sampler the fitted density (with the sampler's own mix on top, if any)."""
    d = GridDensity.load(artifact)
    mix = sampler.config.mix
    sampler.set_density(GridDensity(d.t, (1 - mix) * d.p + mix) if mix > 0 else d)


class Profiler:
    """Runs (and caches) pilot tables for one model and one set of clean sequences."""

    def __init__(self, model, x0: MDMBatch, *, mask_token_id: int, b: int, c: int, grid: str = "midpoint",
                 seed: int = 0, token_budget: int = 16384, arm_model=None, gradient: dict | None = None,
                 progress: bool = False, accelerator=None):
        check_sizes(x0.size, b, c)
        self.model, self.x0, self.mask_token_id = model, x0, mask_token_id
        self.t, self.pi = t_grid(b, grid)
        self.b, self.c, self.grid, self.seed, self.token_budget = len(self.t), c, grid, seed, token_budget
        self.arm_model, self.progress = arm_model, progress
        self.accelerator = accelerator  # MDM loss tables sharded over its ranks (mdm.variance.pilot.run_mdm)
        self.probe = self.arm_probe = None
        if gradient is not None:
            self.probe = LinearGradients(model, gradient.get("params", "last"), gradient.get("projection", 128),
                                         seed=seed)
            if arm_model is not None:
                self.arm_probe = LinearGradients(arm_model, gradient.get("params", "last"),
                                                 gradient.get("projection", 128), seed=seed)
        self.tables: dict[tuple, PilotRun] = {}
        self.forward_rows = self.forward_tokens = 0

    @property
    def a(self) -> int:
        return self.x0.size

    def table(self, method: Method | str) -> PilotRun:
        key = ARM if method == ARM else table_key(method)
        if key not in self.tables:
            label = f"pilot {method if method == ARM else method.name}"
            if method == ARM:
                if self.arm_model is None:
                    raise ConfigError("methods", "'arm' needs the causal twin (arm_base, or a tiny model: its ARM family)")
                run = run_arm(self.arm_model, self.x0, self.b, self.c, token_budget=self.token_budget,
                              probe=self.arm_probe, progress=self.progress and label)
            else:
                run = run_mdm(self.model, self.x0, method, self.t, self.c, mask_token_id=self.mask_token_id,
                              seed=self.seed, token_budget=self.token_budget, probe=self.probe,
                              progress=self.progress and label, accelerator=self.accelerator)
            self.tables[key] = run
            self.forward_rows += run.forward_rows
            self.forward_tokens += run.forward_tokens
        return self.tables[key]

    def fit_ppots(self, *, full_second_moment=False, mix=0.0, restarts=20, seed=0, strict=False, points=501,
                  meta=None) -> dict:
        """P-POTS artifact from this profiler's Standard table (grid = the pilot's t grid)."""
        run = self.table(Method.build("standard"))
        meta = {"pilot": {"a": self.a, "b": self.b, "c": self.c, "grid": self.grid, "seed": self.seed,
                          "forward_rows": run.forward_rows, "forward_tokens": run.forward_tokens}, **(meta or {})}
        return fitting.fit_ppots(self.t, moments_by_t(run.losses), full_second_moment=full_second_moment,
                                 mix=mix, restarts=restarts, seed=seed, strict=strict, points=points, meta=meta)

    def profile(self, method: Method | str, *, batch_size: int = 32, bootstrap: int = 500) -> tuple[dict, dict]:
        """variance.json's entry for one method (built, P-POTS density installed), and the decomposition
        with its bootstrap replicates (for paired comparisons between methods)."""
        run = self.table(method)
        if method == ARM:
            q, w, view, passes, extra = self.pi, np.ones(self.b), BatchView(batch_size), 1.0, {"targets": "", "unbiased": True}
        else:
            law = t_law(method.t_sampler, self.t, self.pi)
            q, w, view, passes = law.q, law.w, BatchView.of(law.u, batch_size, law.k), method.cost
            extra = {"targets": method.targets, "unbiased": method.unbiased}
        raw = run.grads if self.probe is not None else run.losses
        weights = w.reshape(1, -1, 1, *([1] * (raw.ndim - 3)))
        out = decompose(weights * raw, q, t=self.t, view=view, bootstrap=bootstrap, seed=self.seed)
        moments = moments_by_t(raw)
        entry = {
            **{k: out[k] for k in ("A", "B", "C", "total", "A_se", "B_se", "C_se", "total_se")},
            "sample": out["sample"],
            "A_low_t": out.get("A_low_t"), "A_low_t_se": out.get("A_low_t_se"),
            "t": self.t.tolist(), "q": q.tolist(), "w": w.tolist(),
            "g": moments["g"].tolist(), "v": moments["v"].tolist(), "v_x0": moments["v_x0"].tolist(),
            "A_by_t": out["A_by_t"], "g_sample": out["g"],
            "passes": passes, "batch": out["batch"], **extra,
        }
        return entry, out


def run_variance(profiler: Profiler, methods: list, *, batch_size: int = 32, bootstrap: int = 500,
                 ppots_density=None, fit_options: dict | None = None) -> dict:
    """Profile each method; an 'auto' P-POTS density is fitted from this pilot's Standard table."""
    start = time.perf_counter()
    built = {}
    for spec in methods:
        name = spec if isinstance(spec, str) else spec.get("name") or spec.get("preset", "method")
        built[name] = ARM if spec == ARM else build_method(spec, f"methods.{name}")
    artifact, density_source = None, None
    for method in built.values():
        if method != ARM and isinstance(method.t_sampler, PPOTS) and method.t_sampler.config.density == "auto":
            if artifact is None:
                if ppots_density is not None:
                    artifact, density_source = fitting.load(ppots_density), str(ppots_density)
                else:
                    artifact = profiler.fit_ppots(**(fit_options or {}))
                    density_source = "fitted on this pilot's Standard table"
            install_density(method.t_sampler, artifact)
    results, full = {}, {}
    for name, method in built.items():
        results[name], full[name] = profiler.profile(method, batch_size=batch_size, bootstrap=bootstrap)
    if "standard" in full:  # paired bootstrap (same resampled x0): ratios to Standard with their SE
        for name, entry in results.items():
            entry["vs_standard"] = {}
            for term in ("total", "A", "A_low_t"):
                if term in full[name] and term in full["standard"] and full["standard"][term]:
                    ratio, se = paired_ratio(full[name], full["standard"], term)
                    entry["vs_standard"] |= {f"{term}_ratio": ratio, f"{term}_ratio_se": se}
    return {
        "methods": results,
        "a": profiler.a, "b": profiler.b, "c": profiler.c, "grid": profiler.grid, "seed": profiler.seed,
        "batch_size": batch_size, "bootstrap": bootstrap,
        "mode": "gradient" if profiler.probe is not None else "loss",
        "gradient": None if profiler.probe is None else {
            "modules": [n for n, _ in profiler.probe.modules], "parameters": profiler.probe.size,
            "projection": profiler.probe.projection},
        "ppots_density": density_source,
        "ppots_fit": None if artifact is None else {k: artifact.get(k) for k in ("family", "fit", "mix", "warnings")},
        "forward_rows": profiler.forward_rows, "forward_tokens": profiler.forward_tokens,
        "seconds": time.perf_counter() - start,
    }


def predicted_gain(profiler: Profiler, artifact: dict) -> dict:
    """Total variance of Standard and of P-POTS with this density, on the pilot table (no extra passes)."""
    out = {}
    for name in ("standard", "ppots"):
        method = Method.build({"preset": name, "t_sampler": {"density": "flat"}} if name == "ppots" else name)
        if name == "ppots":
            install_density(method.t_sampler, artifact)
        entry, _ = profiler.profile(method, bootstrap=0)
        out[name] = {k: entry[k] for k in ("A", "B", "C", "total")}
    return out


def finite_or_none(obj):
    """JSON has no NaN: an undefined number (e.g. a standard error without bootstrap) becomes null."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def save_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_or_none(obj), indent=1))
