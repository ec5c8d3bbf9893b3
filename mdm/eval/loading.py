"""Where a run's model is and how it is loaded: `find_model_dir` (final/, checkpoint/, model/, the folder, or an
unfinished `mdm train` run's last checkpoint: `checkpoint_of`), the device and dtype (an unavailable device is one
ConfigError line), `load_model`. Torch-free at import; re-exported by `mdm.eval.api`."""

from __future__ import annotations

import re
from pathlib import Path

from mdm.errors import ConfigError
from mdm.io import read_json


def find_model_dir(path: str | Path) -> Path:
    """The model folder of a run: final/, checkpoint/ (latest checkpoint-N inside), model/, or the folder itself;
    an unfinished `mdm train` run: its last checkpoint (checkpoints/step_N, see `checkpoint_of`)."""
    root = Path(path)
    if not root.exists():
        raise ConfigError("run_dir", f"{root}: no such directory")
    for cand in (root / "final", root / "checkpoint", root / "model", root):
        if (cand / "config.json").is_file():
            return cand
        if cand.is_dir() and cand != root:
            subs = [d for d in cand.iterdir() if d.is_dir() and (d / "config.json").is_file()]
            if subs:
                return max(subs, key=lambda d: (_trailing_int(d.name), d.name))
    steps = sorted(d for d in (root / "checkpoints").glob("step_*") if (d / "trainer_state.json").is_file())
    if steps:
        last = steps[-1]
        if (last / "config.json").is_file() and any((last / f).is_file() for f in CHECKPOINT_WEIGHTS):
            return last
        raise ConfigError("run_dir", f"{root}: unfinished, and its last checkpoint {last.name} holds no loadable model "
                          "(written before checkpoints carried their config, or a LoRA / sharded one); rerun mdm "
                          "train to finish it (it resumes), then evaluate")
    raise ConfigError(
        "run_dir", f"{root}: no model found (looked for config.json in final/, checkpoint/, model/, checkpoints/ and "
        "the folder)"
    )


CHECKPOINT_WEIGHTS = ("pytorch_model.bin", "model.safetensors")  # accelerate's save_state of one model


def checkpoint_of(model_dir: Path) -> dict | None:
    """{step, total_steps, checkpoint, note} when `model_dir` is an `mdm train` checkpoint (an unfinished run)."""
    state = read_json(model_dir / "trainer_state.json") if model_dir.parent.name == "checkpoints" else None
    if not state:
        return None
    total = state.get("total_steps")
    of = f" of {total}" if total else ""
    return {"step": state.get("step"), "total_steps": total, "checkpoint": model_dir.name,
            "note": f"unfinished run: evaluated from its last checkpoint {model_dir.name} (step {state.get('step')}"
                    f"{of})"}


def _trailing_int(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def resolve_device(device=None):
    import torch  # deferred: torch, heavy; mdm.eval is torch-free (mdm.bench.spec imports it)

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError("--device", f"unknown device {device!r}; allowed: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError("--device", f"{device}: not available on this machine ({why}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError("--device", f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device", f"{device}: not available on this machine (no Apple MPS); use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError("--device", f"{device}: not supported; allowed: cpu, cuda, cuda:N, mps")
    return dev


def resolve_dtype(dtype, device):
    import torch  # deferred: torch, heavy; mdm.eval is torch-free (mdm.bench.spec imports it)

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}  # fmt: skip
    if dtype not in table:
        raise ConfigError("dtype", f"unknown dtype {dtype!r}; allowed: {', '.join(table)}")
    return table[dtype]


def load_model(path: str | Path, device=None, dtype=None):
    """(model, tokenizer, model_dir) from a run folder or a model folder (its family's adapter, `mdm.adapters`)."""
    from mdm.adapters import load_model as load_folder  # deferred: mdm.adapters imports torch

    model_dir = find_model_dir(path)
    if not any((model_dir / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        raise ConfigError("run_dir", f"{model_dir}: no tokenizer saved with the model")
    device = resolve_device(device)
    model, tokenizer = load_folder(model_dir, causal=None, dtype=resolve_dtype(dtype, device))
    return model.to(device).eval(), tokenizer, model_dir
