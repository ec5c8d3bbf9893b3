"""Training engine: a run config (YAML, pydantic) and one readable, resumable training loop on accelerate.

    mdm train RUN.yaml [--set training.lr=1e-4 ...]
    accelerate launch --config_file benchmarks/accelerate/ddp.yaml -m mdm.cli train RUN.yaml
"""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {  # `mdm --help` and config errors do not import torch
    "RunConfig": "config", "load_run_config": "config",
    "Trainer": "trainer", "TrainingFailed": "trainer", "read_log": "trainer", "train_run": "trainer",
})  # fmt: skip
