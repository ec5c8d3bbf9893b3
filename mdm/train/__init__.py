"""Training engine: a run config (YAML, pydantic) and one readable, resumable training loop on accelerate.

    mdm train RUN.yaml [--set training.lr=1e-4 ...]
    accelerate launch --config_file benchmarks/accelerate/ddp.yaml -m mdm.cli train RUN.yaml
"""

from mdm.train.config import RunConfig, load_run_config
from mdm.train.trainer import Trainer, TrainingFailed, read_log, train_run

__all__ = ["RunConfig", "Trainer", "TrainingFailed", "load_run_config", "read_log", "train_run"]
