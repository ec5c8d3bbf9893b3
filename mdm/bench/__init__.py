"""Benchmark runner: YAML specs (tasks x methods x seeds + ARM rows, per preset) -> resumable, traceable runs.

    mdm bench benchmarks/table1.yaml --preset tiny [--jobs 2]
    mdm bench benchmarks/table1.yaml --preset paper --dry-run
"""

from __future__ import annotations

__all__ = ["PlannedRun", "expand", "load_spec"]


def __getattr__(name):  # lazy, so that `mdm --help` does not import torch
    if name in __all__:
        from mdm.bench import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'mdm.bench' has no attribute {name!r}")
