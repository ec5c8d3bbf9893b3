"""`training.report_to`: accelerate's experiment trackers, checked before any compute, files under the run folder.

    report_to: [tensorboard]   ->  <output_dir>/trackers/<run name>/events.out.tfevents...
    report_to: [wandb]         ->  <output_dir>/trackers/wandb/ (offline unless an API key is set and the hub is online)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mdm.errors import ConfigError

# accelerate's tracker names and the package each one needs (pip name when it differs from the import name)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "comet_ml": ("comet_ml", "comet-ml"), "aim": ("aim", "aim"), "mlflow": ("mlflow", "mlflow"),
            "clearml": ("clearml", "clearml"), "dvclive": ("dvclive", "dvclive"), "swanlab": ("swanlab", "swanlab"),
            "trackio": ("trackio", "trackio")}
WHERE = "training.report_to"


def check_trackers(names: list[str], where: str = "") -> None:
    """An unknown name or a tracker whose package is not installed: one ConfigError."""
    key = f"{where}: {WHERE}" if where else WHERE
    for name in names:
        if name not in PACKAGES:
            raise ConfigError(key, f"unknown tracker {name!r}; allowed: {', '.join(PACKAGES)}")
        module, pip = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(key, f"tracker {name!r} needs the {pip!r} package, which is not installed; "
                              f"pip install {pip} (or remove {name!r})")


def tracker_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "trackers"


def init_kwargs(names: list[str], run_dir: Path) -> dict:
    """Per-tracker keyword arguments of `init_trackers`; wandb goes offline without an API key or on an offline hub."""
    out = {}
    if "wandb" in names:
        offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("HF_HUB_OFFLINE") == "1"
        if offline and "WANDB_MODE" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        out["wandb"] = {"dir": str(tracker_dir(run_dir))}
    return out


def flat_config(d: dict, prefix: str = "") -> dict:
    """Hyperparameters as one level of scalars (TensorBoard's hparams take no nesting, lists or None)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat_config(v, f"{key}.")
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


STEP_KEYS = ("loss", "loss_raw", "grad_norm", "lr", "tokens_seen", "passes_seen", "token_passes_seen",
             "masked_tokens", "epoch")


def step_values(entry: dict) -> dict:
    """What a tracker gets of one train_log.jsonl line (scalars only)."""
    return {f"train/{k}": entry[k] for k in STEP_KEYS if entry.get(k) is not None}


def finish(acc) -> None:
    """Close the trackers' files (not `Accelerator.end_training`: that also ends the process group)."""
    for tracker in acc.trackers:
        tracker.finish()
