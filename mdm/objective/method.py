"""A method = one component per slot, built from a preset name ("ppots+mirror+strats") or a mapping.

Slots: t_sampler (rate of masking per sequence), rate (per-token probability), mask (view coupling),
eligibility (which tokens carry loss), control_variate. Presets combine with "+"; a u-source preset
(strats, lattice) combined with a transform (ppots, clipped) stratifies the transform's u.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from mdm.errors import ConfigError
from mdm.objective import components  # noqa: F401  (registers everything)
from mdm.objective.components.masks import MaskBuilder
from mdm.objective.components.t_samplers import U_SOURCES
from mdm.registry import CONTROL_VARIATES, ELIGIBILITY, MASKS, RATES, T_SAMPLERS, Component

SLOTS = {
    "t_sampler": T_SAMPLERS,
    "rate": RATES,
    "mask": MASKS,
    "eligibility": ELIGIBILITY,
    "control_variate": CONTROL_VARIATES,
}
DEFAULTS = {"t_sampler": "uniform", "rate": "standard", "mask": "bernoulli", "eligibility": "response",
            "control_variate": "none"}

# name -> (slot settings, one-line description). The benchmark rows of the paper plus peer baselines.
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "standard": ({}, "LLaDA SFT loss: t ~ U[0,1], Bernoulli mask, 1/p weight"),
    "ppots": ({"t_sampler": {"name": "ppots"}}, "P-POTS: t ~ fitted p*(t), weight 1/p(t)"),
    "mirror": ({"mask": {"name": "mirror"}}, "MIRROR: two complementary masks from one U, averaged"),
    "isad": ({"rate": {"name": "isad"}}, "ISAD: answer delimiters masked with p + delta, weight 1/q"),
    "syrm": ({"eligibility": {"name": "syrm"}}, "SyRM: prompt syntax tokens also masked and predicted"),
    "strats": ({"t_sampler": {"name": "strats"}}, "StraTS: t stratified over the global batch"),
    "ema": ({"control_variate": {"name": "ema"}}, "bin-wise EMA control variate on the loss value"),
    "clipped": ({"t_sampler": {"name": "clipped"}}, "t ~ U[0.3, 0.8] (clipped schedule)"),
    "lattice": ({"t_sampler": {"name": "lattice"}}, "lattice / antithetic t over the batch (MD4, MDLM)"),
    "multisample2": ({"mask": {"name": "multisample", "k": 2}}, "two independent masks at one t"),
    "exact_count": ({"mask": {"name": "exact_count"}}, "exactly p|E| tokens masked (stochastic rounding)"),
    "ppots_adaptive": ({"t_sampler": {"name": "ppots_adaptive"}},
                       "adaptive P-POTS: p(t) refitted during training from per-t-bin loss moments, weight 1/p"),
    "mirror_released_plus": ({"mask": {"name": "mirror_released_plus"}},
                             "released code: MIRROR's second view only when t < 0.9, each view clamped at 10"),
    "ppots_released": ({"t_sampler": {"name": "ppots_released"}},
                       "released code: P-POTS t without the 1/p weight, loss clamped at 10"),
    "isad_released": ({"rate": {"name": "isad_released"}}, "released code: delimiter CE weighted p/q^2"),
}
BENCHMARK_PRESETS = ["standard", "ppots", "mirror", "ppots+mirror", "isad", "syrm", "strats", "ema",
                     "clipped", "multisample2", "lattice", "exact_count"]


def _as_dict(spec) -> dict:
    return dict(spec) if isinstance(spec, dict) else {"name": spec}


def _merge_slot(slot: str, old, new, where: str):
    if old is None:
        return new
    old, new = _as_dict(old), _as_dict(new)
    if slot == "t_sampler":
        for source, transform in ((old, new), (new, old)):
            if source["name"] in U_SOURCES and transform["name"] not in U_SOURCES and "u" not in transform:
                merged = {**transform, "u": source["name"]}
                if "k" in source:
                    merged["k"] = source["k"]
                return merged
    raise ConfigError(where, f"{old['name']!r} and {new['name']!r} both set the {slot}; choose one")


def expand_preset(name: str, where: str = "method") -> dict:
    """'ppots+mirror+strats' -> slot settings."""
    slots: dict[str, Any] = {}
    for part in name.split("+"):
        part = part.strip()
        if part not in PRESETS:
            raise ConfigError(where, f"unknown method {part!r}; allowed: {', '.join(PRESETS)} (join with '+')")
        for slot, value in PRESETS[part][0].items():
            slots[slot] = _merge_slot(slot, slots.get(slot), copy.deepcopy(value), where)
    return slots


@dataclass
class Method:
    name: str
    t_sampler: Component
    rate: Component
    mask: MaskBuilder
    eligibility: Component
    control_variate: Component

    @classmethod
    def build(cls, spec: str | dict | Method, where: str = "method") -> Method:
        """From a preset name, or {preset: ..., <slot>: {...}} where slot settings override the preset's."""
        if isinstance(spec, Method):
            return spec
        if isinstance(spec, str):
            spec = {"preset": spec}
        if not isinstance(spec, dict):
            raise ConfigError(where, f"expected a preset name or a mapping; got {spec!r}")
        unknown = set(spec) - set(SLOTS) - {"preset", "name"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", f"unknown key; allowed: preset, name, {', '.join(SLOTS)}")
        preset = spec.get("preset", "standard")
        slots = expand_preset(preset, f"{where}.preset")
        for slot in SLOTS:
            if isinstance(spec.get(slot), Component):
                slots[slot] = spec[slot]
            elif slot in spec:
                override = _as_dict(spec[slot])
                base = _as_dict(slots.get(slot, DEFAULTS[slot]))
                slots[slot] = override if override.get("name", base["name"]) != base["name"] else {**base, **override}
        built = {slot: SLOTS[slot].build(slots.get(slot, DEFAULTS[slot]), f"{where}.{slot}") for slot in SLOTS}
        method = cls(name=spec.get("name", preset), **built)
        if method.mask.uniform_rate_only and method.rate.name != "standard":
            raise ConfigError(f"{where}.mask", f"{method.mask.name} needs a uniform per-token rate; "
                              f"it cannot combine with rate {method.rate.name!r}")
        return method

    @property
    def components(self) -> list[Component]:
        return [self.t_sampler, self.rate, self.mask, self.eligibility, self.control_variate]

    @property
    def targets(self) -> str:
        return "".join(x for x in "ABC" if any(x in c.targets for c in self.components))

    @property
    def unbiased(self) -> bool:
        return all(c.unbiased for c in self.components)

    @property
    def released(self) -> bool:
        return any(c.released for c in self.components)

    @property
    def cost(self) -> float:
        """Forward/backward passes per sequence, relative to Standard (P-POTS's pilot is a one-off, not here)."""
        return float(self.mask.cost)

    def describe(self) -> dict:
        return {"name": self.name, "targets": self.targets, "unbiased": self.unbiased, "cost": self.cost,
                "released": self.released, "components": [repr(c) for c in self.components]}
