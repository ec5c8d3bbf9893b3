"""Benchmark runner: YAML specs (tasks x methods x seeds + ARM rows, per preset) -> resumable, traceable runs.

    mdm bench benchmarks/table1.yaml --preset tiny [--jobs 2]
    mdm bench benchmarks/table1.yaml --preset paper --dry-run
"""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"PlannedRun": "spec", "expand": "spec", "load_spec": "spec"})
