"""Executors of a benchmark plan, found by name (`mdm bench SPEC --executor NAME`); each runs the same run unit,
`mdm.bench.runner.execute` (train + evaluate one run, write its record):

    local   a process pool on this machine (`--jobs N`): mdm.bench.runner.run_plan (the default)
    slurm   one SLURM job per run (a job array), submitted with submitit: mdm.bench.executors.slurm

An executor is `fn(spec, runs, args)` (args: the parsed `mdm bench` options); it raises SystemExit with the exit code
when it is not 0. Targets are imported on first use (`module:function`), so the CLI stays light.
"""

from __future__ import annotations

import importlib

from mdm.errors import ConfigError

EXECUTORS: dict[str, str] = {
    "local": "mdm.bench.cli:run_local",
    "slurm": "mdm.bench.executors.slurm:run_slurm",
}


def register_executor(name: str, target: str) -> None:
    """`target`: "package.module:function", imported when the executor is used."""
    EXECUTORS[name] = target


def get_executor(name: str):
    if name not in EXECUTORS:
        raise ConfigError("--executor", f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
    module, fn = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module), fn)
