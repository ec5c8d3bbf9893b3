"""Benchmark runner: YAML specs (tasks x methods x seeds + ARM rows, per preset) -> resumable, traceable runs.

    mdm bench benchmarks/table1.yaml --preset tiny [--jobs 2]
    mdm bench benchmarks/table1.yaml --preset paper --dry-run
"""

from mdm.bench.spec import PlannedRun, expand, load_spec

__all__ = ["PlannedRun", "expand", "load_spec"]
