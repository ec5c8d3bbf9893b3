"""P-POTS with density 'auto': fit p*(t) once before training, on the main process, and share it.

The pilot and the EPR fit are `mdm.variance`'s (METHODS.md 3): a Standard pilot table l[a, b, c] on `a`
training sequences chosen by the pilot seed, with the model about to be fine-tuned, then the KL fit of the
EPR family. The artifact is saved as `<run>/ppots.json`, broadcast to every process, and reloaded by a
resumed run (never refitted). Without `mdm.variance`, 'auto' is a ConfigError asking for an explicit density.
"""

from __future__ import annotations

import importlib

import torch

from mdm.errors import ConfigError
from mdm.objective.rng import generator


def needs_fit(method) -> bool:
    ts = method.t_sampler
    return ts.name in ("ppots", "ppots_released") and isinstance(ts.config.density, str) and ts.config.density == "auto"


def fitter():
    """mdm.variance.profile (the pilot + fit), or None when this checkout does not have it."""
    try:
        return importlib.import_module("mdm.variance.profile")
    except ModuleNotFoundError as e:
        if e.name is None or not "mdm.variance.profile".startswith(e.name):
            raise
        return None


def require_fitter(where: str = "method.t_sampler.density"):
    found = fitter()
    if found is None:
        raise ConfigError(where, "'auto' needs the P-POTS pilot and fit (mdm.variance), which this checkout does not "
                          "have; give a density JSON path (from `mdm fit-ppots`) or 'flat'")
    return found


def fit_density(*, model, items, collate, mask_token_id, pilot, device, meta=None) -> dict:
    """Run the pilot and the fit (main process only). Returns the ppots.json artifact ({grid, density, ...})."""
    profile = require_fitter()
    a = min(pilot.a, len(items))
    rows = torch.randperm(len(items), generator=generator(pilot.seed, "ppots-pilot"))[:a].sort().values.tolist()
    x0 = collate([items[i] for i in rows]).to(device)
    prof = profile.Profiler(model, x0, mask_token_id=mask_token_id, b=pilot.b, c=pilot.c, grid=pilot.grid,
                            seed=pilot.seed, token_budget=pilot.token_budget)
    return prof.fit_ppots(restarts=pilot.restarts, seed=pilot.seed, full_second_moment=pilot.full_second_moment,
                          meta={"pilot_rows": rows, **(meta or {})})


def install(sampler, artifact: dict) -> None:
    """Give the 'auto' sampler the fitted density (with the sampler's own `mix` applied on top)."""
    profile = fitter()
    if profile is not None and hasattr(profile, "install_density"):
        profile.install_density(sampler, artifact)
    else:
        sampler.set_density(artifact)
