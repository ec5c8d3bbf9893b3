"""Progress for long loops: the tqdm bar on a terminal, else a few plain lines (logs and CI get no `\\r` floods).

    bar = progress(total=120, desc="pilot standard", unit="row", enabled=True)
    bar.update(8); bar.set_postfix(loss="2.31"); bar.close()

Off a terminal a line `desc: 24/120 rows (20%), loss 2.31, elapsed 0:00:05, eta 0:00:20` is printed to stderr
every `every` units (default: about `lines` per loop), at least every `seconds` (30 s) whatever the unit count,
and at the end.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta


def clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class PlainProgress:
    def __init__(self, total: int, desc: str, unit: str = "step", initial: int = 0, every: int | None = None,
                 lines: int = 10, file=None, seconds: float = 30.0):
        self.total, self.desc, self.unit, self.n, self.start_n = total, desc, unit, initial, initial
        self.seconds, self.last = seconds, time.perf_counter()
        self.every = every or max(1, math.ceil(total / lines))
        self.next = (initial // self.every + 1) * self.every
        self.file, self.postfix, self.start = file or sys.stderr, {}, time.perf_counter()

    def set_postfix(self, refresh: bool = False, **kwargs) -> None:
        self.postfix = kwargs

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.next or self.n >= self.total or time.perf_counter() - self.last >= self.seconds:
            self.next = (self.n // self.every + 1) * self.every
            self.print()

    def print(self) -> None:
        self.last = time.perf_counter()
        elapsed = self.last - self.start
        done = self.n - self.start_n
        eta = elapsed / done * (self.total - self.n) if done else float("nan")
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.unit} {self.n}/{self.total}{pct}{extra}, elapsed {clock(elapsed)}, "
              f"eta {clock(eta) if eta == eta else '?'}", file=self.file, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, desc: str, *, enabled: bool = True, unit: str = "step", initial: int = 0,
             every: int | None = None, file=None):
    """A tqdm bar when `file` (stderr) is a terminal, else PlainProgress; nothing at all when not `enabled`."""
    from tqdm.auto import tqdm  # deferred: tqdm, only when a bar is made

    file = file or sys.stderr
    if enabled and not file.isatty():
        return PlainProgress(total, desc, unit, initial, every, file=file)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, leave=False,
                dynamic_ncols=True, file=file, mininterval=1.0)
