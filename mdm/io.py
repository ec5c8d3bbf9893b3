"""Files that are never seen half-written, and locks between processes (torch-free).

    atomic_write_json(path, obj)    a temp file in the same folder, fsync, os.replace (the file's mode is kept);
                                    NaN / inf become null, so every file is valid JSON
    atomic_write_text(path, text)   the same for text; write_jsonl(path, rows) for JSON lines
    read_json(path)                 the object, or None when the file is absent, unreadable or cut short
    file_lock(path)                 an exclusive lock between processes on the lock file `path` (filelock)
    folder_lock(folder)             the same on a folder itself, leaving no lock file behind (record.json's folder)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


def finite(obj):
    """NaN and inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def json_default(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return finite(o.item())
    return str(o)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(finite(obj), indent=2, default=json_default, allow_nan=False) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(finite(r), ensure_ascii=False, default=json_default, allow_nan=False)
                                    + "\n" for r in rows))


def read_json(path: str | Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or cut short
        return None


def file_lock(path: str | Path):
    """`with file_lock(folder.with_name(folder.name + ".lock")):` one process at a time (the lock file stays)."""
    from filelock import FileLock  # deferred: filelock, only when a lock is taken

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


@contextlib.contextmanager
def folder_lock(folder: str | Path):
    """An exclusive flock on the folder itself (POSIX), so no lock file lands among the results."""
    try:
        import fcntl  # deferred: fcntl is POSIX-only (ImportError elsewhere)
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
