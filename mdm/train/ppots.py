"""P-POTS with density 'auto': fit p*(t) once before training (the pilot sharded over all ranks), and share it.

The pilot and the EPR fit are `mdm.variance`'s (METHODS.md 3): a Standard pilot table l[a, b, c] on `a`
training sequences chosen by the pilot seed, with the model about to be fine-tuned, then the KL fit of the
EPR family. The artifact is saved as `<run>/ppots.json`, broadcast to every process, and reloaded by a
resumed run (never refitted).

The pilot is a deterministic function of the starting weights, the pilot rows and the pilot settings, so it is
also cached under `<cache>/ppots/<key>.json`, keyed by a fingerprint of all three and of the code that computes it
(the pilot, the EPR fit: `mdm.cache.derivation`): the runs of a benchmark that
start from the same model on the same data (every seed of P-POTS and of P-POTS+MIRROR) share one pilot, and
its cost is paid once per (model, task) instead of once per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
from pathlib import Path

import torch

from mdm.cache import derivation
from mdm.io import atomic_write_json, file_lock, read_json
from mdm.objective.rng import generator


def needs_fit(method) -> bool:
    ts = method.t_sampler
    return ts.name in ("ppots", "ppots_released") and isinstance(ts.config.density, str) and ts.config.density == "auto"


def fitter():
    """mdm.variance.profile: the pilot and the EPR fit (imported on first use: it pulls in scipy)."""
    return importlib.import_module("mdm.variance.profile")


PILOT_FORMAT = "ppots-pilot-v1"  # the artifact's layout; the pilot's and the fit's code are in the key (derivation)


def fit_density(*, model, items, collate, mask_token_id, pilot, device, meta=None, cache_dir=None,
                accelerator=None) -> dict:
    """Run the pilot and the fit, or reuse the identical pilot from `cache_dir`. Returns the ppots.json artifact
    ({grid, density, ..., "pilot_cache": {key, reused}}). With `accelerator`, every rank calls this: the pilot's
    forwards are sharded over the ranks (the wrapped model, its autocast), each rank fits the same summed table, and
    the main process alone reads and writes the cache (holding its lock while the ranks compute)."""
    profile = fitter()
    main = accelerator is None or accelerator.is_main_process
    a = min(pilot.a, len(items))
    rows = torch.randperm(len(items), generator=generator(pilot.seed, "ppots-pilot"))[:a].sort().values.tolist()
    x0 = collate([items[i] for i in rows]).to(device)

    def fit() -> dict:
        prof = profile.Profiler(model, x0, mask_token_id=mask_token_id, b=pilot.b, c=pilot.c, grid=pilot.grid,
                                seed=pilot.seed, token_budget=pilot.token_budget, accelerator=accelerator)
        return prof.fit_ppots(restarts=pilot.restarts, seed=pilot.seed, full_second_moment=pilot.full_second_moment,
                              meta={"pilot_rows": rows, **(meta or {})})

    if cache_dir is None:
        return fit()
    key = path = cached = None
    if main:
        inner = accelerator.unwrap_model(model) if accelerator is not None else model
        key = pilot_key(inner, x0, mask_token_id, pilot, device)
        path = Path(cache_dir) / f"{key}.json"
    with file_lock(path.with_suffix(".lock")) if main else contextlib.nullcontext():  # parallel runs wait
        if main:
            cached = read_json(path)
        if accelerator is not None:
            # deferred: accelerate, only in a multi-process launch
            from accelerate.utils import broadcast_object_list

            shared = [cached, key]
            broadcast_object_list(shared, from_process=0)
            cached, key = shared
        if cached is not None:
            return {**cached, "pilot_cache": {"key": key, "reused": True, "fitted_by": cached.get("run")}}
        artifact = fit()
        if main:
            atomic_write_json(path, artifact)
    return {**artifact, "pilot_cache": {"key": key, "reused": False}}


def pilot_key(model, x0, mask_token_id: int, pilot, device) -> str:
    """Fingerprint of what determines a pilot: the weights (per tensor: float64 sum, absolute sum and the first
    8 values, cheap even for 8B parameters), the pilot rows' tokens, the pilot settings, the device type, the code
    of the pilot and the fit (`mdm.cache.derivation("pilot")`: an edit of the fit never returns an old density) and the
    source file of the model's class (its forward: a hub model's remote code)."""
    h = hashlib.sha256(json.dumps({"format": PILOT_FORMAT, "code": derivation("pilot"),
                                   "pilot": pilot.model_dump(mode="json"), "mask": mask_token_id,
                                   "device": torch.device(device).type}, sort_keys=True).encode())
    with contextlib.suppress(OSError, TypeError):  # the forward's code: a hub model's (remote) modeling file
        h.update(Path(inspect.getsourcefile(type(model))).read_bytes())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            flat = p.detach().reshape(-1).double()
            summary = torch.cat([flat.sum()[None], flat.abs().sum()[None], flat[:8]]).cpu()
            h.update(name.encode() + summary.numpy().tobytes())
    for t in (x0.input_ids, x0.attention_mask, x0.prompt_lengths):
        h.update(t.detach().cpu().long().numpy().tobytes())
    return h.hexdigest()[:24]


def install(sampler, artifact: dict) -> None:
    """Give the 'auto' sampler the fitted density (with the sampler's own `mix` applied on top)."""
    fitter().install_density(sampler, artifact)
