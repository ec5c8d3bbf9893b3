"""The `slurm:` section of a benchmark spec (cluster settings of `mdm bench --executor slurm`), torch-free.

    slurm:
      partition: gpu            # sbatch --partition
      account: my-project       # --account
      qos: normal               # --qos
      constraint: h100          # --constraint
      time: "12:00:00"          # --time per run: minutes or [D-]HH:MM:SS (default: 2 x the estimate + 30 min)
      nodes: 1                  # nodes per run (launch.num_processes is the total over them, as in accelerate)
      cpus_per_task: 16         # CPUs of each node's task (the run's `accelerate launch` and its workers)
      mem_gb: 256               # memory per node
      setup: ["source ~/venv/bin/activate"]   # shell lines before the run starts

Override any key on the command line: `--slurm partition=debug --slurm time=30`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from mdm.errors import ConfigError
from mdm.schema import Strict, apply_overrides, validate_model

TIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")  # sbatch --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM[:SS]


class SlurmSettings(Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str | int | None = Field(None, description="per run: minutes or [D-]HH:MM:SS; default from the estimate")
    nodes: int = Field(1, ge=1)
    gpus_per_node: int | None = Field(None, ge=0, description="default: hardware.count / nodes with a launch, else 0")
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    signal: Literal["USR1", "USR2"] = "USR1"  # the warning signal before the time limit: checkpoint + requeue
    signal_delay_s: int = Field(120, ge=5, description="seconds before the time limit the warning is sent")
    array_parallelism: int | None = Field(None, ge=1, description="at most this many runs of the array at once")
    max_requeues: int = Field(20, ge=0, description="a run requeued more often than this is left interrupted")
    setup: list[str] = []
    sbatch: dict[str, Any] = {}  # any other sbatch option, e.g. {exclusive: true, mail-type: END}

    @field_validator("time")
    @classmethod
    def _time(cls, v):
        if v is None:
            return v
        if isinstance(v, int) and v >= 1 or isinstance(v, str) and TIME.match(v):
            return v
        raise ValueError(f"expected minutes or [D-]HH:MM:SS; got {v!r}")


def slurm_settings(section: SlurmSettings, overrides: list[str] | None) -> SlurmSettings:
    """The spec's `slurm:` section with `--slurm key=value` overrides, validated (one ConfigError line)."""
    if not overrides:
        return section
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" in item and key.split(".")[0] not in SlurmSettings.model_fields:
            raise ConfigError("--slurm", f"unknown key {key!r}; allowed: {', '.join(SlurmSettings.model_fields)}")
    data = apply_overrides(section.model_dump(exclude_unset=True), overrides, where="--slurm")
    return validate_model(SlurmSettings, data, "--slurm")
