"""A run's evaluation as its own launched job (`mdm bench` with a multi-process launch config).

    launched_eval(run_dir, settings, launch)   # accelerate launch --config_file <the run's> -m mdm.cli eval ...

The settings travel in `<run_dir>/eval_settings.json` (`mdm eval --settings`); every process of the launch decodes
its share of the prompts (`mdm.eval.distributed`), rank 0 writes the record, and the processes exit, so the bench
process that called this never holds GPU memory. Outside a launch, `free_device_memory` hands back what an
in-process evaluation left in torch's CUDA cache.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

SETTINGS_FILE = "eval_settings.json"


def eval_command(run_dir: Path, launch, settings_file: Path) -> list[str]:
    """The command line: the run's launch config (and its process count), `mdm eval` on the run folder."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch.config_file)]
    if launch.num_processes:
        cmd += ["--num_processes", str(launch.num_processes)]
    return cmd + ["-m", "mdm.cli", "eval", str(run_dir), "--settings", str(settings_file)]


def launched_eval(run_dir: str | Path, settings: dict, launch) -> dict:
    """Evaluate a finished run over all processes of `launch`; returns the record's `eval` / `metrics` after it.
    A launch that fails raises with its exit code (the runner records the run failed, as for training)."""
    from mdm.io import read_json  # deferred: keeps this module import-light for the runner

    run_dir = Path(run_dir)
    settings_file = run_dir / SETTINGS_FILE
    settings_file.write_text(json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
    proc = subprocess.run(eval_command(run_dir, launch, settings_file))
    if proc.returncode != 0:
        raise RuntimeError(f"the evaluation launch (accelerate launch ... mdm eval {run_dir}) exited with code "
                           f"{proc.returncode}")
    record = read_json(run_dir / "record.json") or {}
    return {"eval": record.get("eval"), "metrics": record.get("metrics")}


def free_device_memory() -> None:
    """Give back the CUDA memory an in-process evaluation cached (nothing when torch never touched a GPU)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
