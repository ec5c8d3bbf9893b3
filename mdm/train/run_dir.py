"""A run folder's ownership and its writes: one configuration (`stale_reason`, `set_aside`), one process at a time
(`mdm.io.owned_folder`), and writes that fail for lack of space as one line that says what is kept (`saving`).

Everything a run writes goes to a temporary name first and is renamed when complete, so a full disk (or a kill)
never leaves a half-written checkpoint or model in place of the last good one.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from mdm.errors import is_disk_full
from mdm.io import disk_full, folder_bytes, read_json


def stale_reason(run_dir: Path, cfg) -> str | None:
    """The first difference when `run_dir` holds a run of another configuration, else None."""
    saved = read_json(Path(run_dir) / "run_config.json")
    mine = cfg.trajectory_dict()
    if saved is None or saved.get("trajectory") == mine:
        return None
    return first_difference(saved.get("trajectory"), mine)


def set_aside(run_dir: Path) -> Path:
    """Move a run folder to `<folder>.stale-N` (nothing is deleted); returns the new path."""
    run_dir = Path(run_dir)
    n = 1
    while run_dir.with_name(f"{run_dir.name}.stale-{n}").exists():
        n += 1
    return run_dir.rename(run_dir.with_name(f"{run_dir.name}.stale-{n}"))


def first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return f"{path}: {a!r} then, {b!r} now"


def state_bytes(model, optimizer_copies: int = 2) -> int:
    """Bytes of a model's parameters plus `optimizer_copies` fp32 copies of the trainable ones (AdamW's two
    moments), and 64 KB for the rest (config, tokenizer, states): what a checkpoint needs when there is no earlier
    one to measure (a tokenizer of a hub model is more; the message says "about")."""
    total = 1 << 16
    for p in model.parameters():
        total += p.numel() * p.element_size()
        if p.requires_grad:
            total += optimizer_copies * p.numel() * 4
    return total


def kept_text(latest: Path | None) -> str:
    if latest is None:
        return "no checkpoint yet; free space (or use another output_dir) and rerun"
    return f"the last good checkpoint {latest.name} is intact; free space and rerun (it resumes from there)"


@contextlib.contextmanager
def saving(tmp: Path, need: int | None, what: str, latest: Path | None):
    """Write into `tmp` (removed again if the write fails); a full disk is one DiskFull line naming `tmp`'s
    folder, the bytes needed and what is kept."""
    try:
        yield
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # frees what the failed write took (before "free" is measured)
        if is_disk_full(e):
            raise disk_full(tmp.parent, need, what, kept_text(latest)) from None
        raise


def need_for(latest: Path | None, model) -> int:
    """Bytes a new checkpoint needs: the last one's size, else the model's state estimate."""
    return folder_bytes(latest) if latest is not None else state_bytes(model)
