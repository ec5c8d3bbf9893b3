"""Files that are never seen half-written, and locks between processes (torch-free).

    atomic_write_json(path, obj)    a temp file in the same folder, fsync, os.replace (the file's mode is kept);
                                    NaN / inf become null, so every file is valid JSON
    atomic_write_text(path, text)   the same for text; write_jsonl(path, rows) for JSON lines
    read_json(path)                 the object, or None when the file is absent, unreadable or cut short
    file_lock(path)                 an exclusive lock between processes on the lock file `path` (filelock)
    folder_lock(folder)             the same on a folder itself, leaving no lock file behind (record.json's folder)
    owned_folder(folder, command)   one owner at a time (filelock on <folder>/.lock, without waiting): a second
                                    owner gets `Busy` naming the holder (pid, host, since when), from <folder>/.owner.json
    space_for(path, need, ...)      a write that fails for lack of space becomes `DiskFull`: one line with the path,
                                    the bytes needed and free (and what is kept intact)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from mdm.errors import Busy, DiskFull, is_disk_full


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
    with space_for(path, len(text.encode("utf-8"))):
        _atomic_write_text(path, text)


def _atomic_write_text(path: Path, text: str) -> None:
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


# ---------------------------------------------------------------- space and ownership


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def folder_bytes(path: str | Path | None) -> int:
    """Bytes of the files under `path` (a file: its size; absent: 0)."""
    if path is None or not Path(path).exists():
        return 0
    p = Path(path)
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


@contextlib.contextmanager
def space_for(path: str | Path, need: int | None = None, what: str = "", kept: str = ""):
    """Turn a write that fails for lack of space (OSError ENOSPC / EDQUOT, torch's short-write RuntimeError) into
    DiskFull: `<path>: no space left to write <what> (<need> needed, <free> free); <kept>`."""
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e):
            raise
        raise disk_full(path, need, what, kept) from None


def disk_full(path: str | Path, need: int | None, what: str = "", kept: str = "") -> DiskFull:
    need_text = f"about {human_bytes(need)} needed" if need else "size unknown"
    tail = f"; {kept}" if kept else ""
    return DiskFull(str(path), f"no space left on the device to write {what or 'it'} ({need_text}, "
                    f"{human_bytes(free_bytes(path))} free){tail}")


OWNER = ".owner.json"


@contextlib.contextmanager
def owned_folder(folder: str | Path, command: str = "mdm train"):
    """Hold `folder` for this process (filelock on <folder>/.lock, released on exit, also by a killed process); a
    folder held by another process raises Busy at once, naming the holder. A folder left empty keeps no lock file."""
    from filelock import FileLock, Timeout  # deferred: filelock, only when a folder is taken

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        o = read_json(folder / OWNER) or {}
        who = f"pid {o.get('pid', '?')} on {o.get('host', '?')}, since {o.get('since', '?')}"
        raise Busy(str(folder), f"in use by another {o.get('command', command)} ({who}); wait for it to finish "
                   "(a rerun then resumes or reports it), or use another output_dir") from None
    try:
        atomic_write_json(folder / OWNER, {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                          "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / OWNER).unlink()  # before the release: the next owner's file is never removed
        with contextlib.suppress(OSError):  # a folder left as empty as it was (a refused run) keeps no lock file
            if folder.is_dir() and not any(p.name != ".lock" for p in folder.iterdir()):
                (folder / ".lock").unlink()
        lock.release()
