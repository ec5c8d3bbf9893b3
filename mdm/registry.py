"""Registries: every component is a small class found by name, configured from a dict / YAML.

    @T_SAMPLERS.register("strats")
    class Stratified(Component):
        class Config(Component.Config):
            k: int | None = Field(None, ge=1)

    T_SAMPLERS.build({"name": "strats", "k": 6}, where="method.t_sampler")

Each component's `Config` is a pydantic model with `extra="forbid"`, so an unknown key, a wrong type or
a value out of range becomes one ConfigError naming the key path and what is allowed.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mdm.errors import ConfigError


class Component:
    """Base of registered components. Subclasses declare `Config` and what they do to the variance."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    name: ClassVar[str] = ""
    targets: ClassVar[str] = ""  # variance terms it reduces: any of "A", "B", "C"
    unbiased: ClassVar[bool] = True  # does it keep the uniform-t objective's expectation
    released: ClassVar[bool] = False  # reproduces the authors' released code (a faithfulness variant)

    def __init__(self, config: Config):
        self.config = config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{self.name}({args})"


def _describe(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    if "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return msg


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[Component]] = {}
        self._lazy: dict[str, str] = {}  # name -> module that registers it when imported (lm-eval style)

    def register_lazy(self, name: str, module: str) -> None:
        """`name` is registered by `module`, imported on first use (keeps its dependencies, e.g. scipy, and its
        layer out of the import of this registry's users)."""
        self._lazy[name] = module

    def register(self, name: str):
        def decorator(cls: type[Component]) -> type[Component]:
            self._lazy.pop(name, None)
            if name in self._classes:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted({*self._classes, *self._lazy})

    def get(self, name: str, where: str = "") -> type[Component]:
        if name not in self._classes and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._classes:
            raise ConfigError(where, f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        return self._classes[name]

    def build(self, spec: Any, where: str = "") -> Component:
        """Build from a name, a {"name": ..., **options} dict, or pass an instance through."""
        if isinstance(spec, Component):
            return spec
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(where, f"expected a {self.kind} name or a mapping with 'name'; got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "name"}
        cls = self.get(spec["name"], f"{where}.name" if where else "name")
        try:
            config = cls.Config(**options)
        except ValidationError as e:
            first = e.errors()[0]
            path = ".".join([where] * bool(where) + [str(p) for p in first["loc"]])
            allowed = ", ".join(cls.Config.model_fields) or "no options"
            raise ConfigError(path, f"{_describe(first)}; {spec['name']} accepts: {allowed}") from None
        return cls(config)


T_SAMPLERS = Registry("t-sampler")
RATES = Registry("token-rate rule")
MASKS = Registry("mask builder")
ELIGIBILITY = Registry("eligibility rule")
CONTROL_VARIATES = Registry("control variate")
