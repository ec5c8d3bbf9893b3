"""One exception type for bad user input: raised before any compute, with a one-line message."""


class ConfigError(ValueError):
    """Invalid configuration. The message names where (file / key path), what was given and what is allowed."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}" if where else problem)


class DiskFull(ConfigError):
    """A write that failed for lack of space (`mdm.io.space_for`): names the path, the bytes needed and free."""


class Busy(ConfigError):
    """A folder owned by another process (`mdm.io.owned_folder`): names the holder (pid, host, since when)."""


DISK_FULL_ERRNOS = (28, 122)  # ENOSPC, EDQUOT
# torch's zip writer (inline_container.cc) reports a short write on a full disk as one of these
TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "No space left on device")


def is_disk_full(e: BaseException, depth: int = 0) -> bool:
    """An OSError ENOSPC / EDQUOT, or torch's RuntimeError for a short write, itself or as its cause."""
    if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_SHORT_WRITE):
        return True
    cause = e.__cause__ or e.__context__
    return cause is not None and depth < 8 and is_disk_full(cause, depth + 1)
