"""One config style for every YAML the project reads: pydantic models that forbid unknown keys, and one error
formatter, so every problem is one line naming the file, the key and what is allowed (torch-free).

    cfg = validate_model(RunConfig, data, "run.yaml")   # ConfigError: "run.yaml: training.lrr: unknown key; allowed: ..."
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mdm.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _inner_model(ann) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (X, X | None, dict[str, X], list[X]), if any."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at loc[-1] (dict keys / list indices are skipped)."""
    current: type[BaseModel] | None = cls
    pending_container = False
    for key in loc[:-1]:
        if pending_container:  # the key of a dict / index of a list
            pending_container = False
            continue
        if current is None or not isinstance(key, str) or key not in current.model_fields:
            return None
        ann = current.model_fields[key].annotation
        origin = typing.get_origin(ann)
        pending_container = origin in (dict, list)
        current = _inner_model(ann)
    return None if pending_container else current


def format_loc(loc) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe_validation_error(err: ValidationError, cls: type[BaseModel], prefix: str = "") -> tuple[str, str]:
    """(key path, problem) of the first error, with the allowed keys or values."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = format_loc(loc)
    if prefix:
        path = f"{prefix}{'' if path.startswith('[') or not path else '.'}{path}"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        owner = _model_at(cls, loc)
        allowed = ", ".join(owner.model_fields) if owner else "?"
        return path, f"unknown key; allowed: {allowed}"
    if first["type"] == "missing":
        return path, "required key is missing"
    if "input" in first and not isinstance(first["input"], (dict, list)):
        msg += f" (got {first['input']!r})"
    return path, msg


def validate_model(cls: type[BaseModel], data: Any, where: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(where, f"{prefix or 'the file'} must be a mapping; got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        path, problem = describe_validation_error(e, cls, prefix)
        raise ConfigError(f"{where}: {path}" if path else where, problem) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{line}: {getattr(e, 'problem', e)}") from None


def apply_overrides(data: dict, overrides: list[str], where: str = "--set") -> dict:
    """`key.path=value` (value parsed as YAML) into a nested mapping."""
    data = json.loads(json.dumps(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(where, f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"{where} {key}", f"{p!r} is not a section")
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value
    return data


