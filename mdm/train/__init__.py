"""Training engine: a run config (YAML, pydantic) and one readable, resumable training loop on accelerate.

    mdm train RUN.yaml [--set training.lr=1e-4 ...]
    accelerate launch --config_file benchmarks/accelerate/ddp.yaml -m mdm.cli train RUN.yaml
"""

from __future__ import annotations

import importlib

_LAZY = {"RunConfig": "mdm.train.config", "load_run_config": "mdm.train.config", "Trainer": "mdm.train.trainer",
         "TrainingFailed": "mdm.train.trainer", "read_log": "mdm.train.trainer", "train_run": "mdm.train.trainer"}

__all__ = ["RunConfig", "Trainer", "TrainingFailed", "load_run_config", "read_log", "train_run"]


def __getattr__(name):  # lazy, so that `mdm --help` and config errors do not import torch
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mdm.train' has no attribute {name!r}")
