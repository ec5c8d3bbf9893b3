"""Reports: leaderboards, synergy-vs-additivity tables and plots, from run records or per-seed CSVs."""

from __future__ import annotations

__all__ = ["leaderboard", "load_scores", "synergy"]


def __getattr__(name):  # lazy, so that `mdm --help` does not import pandas
    if name in __all__:
        from mdm.report import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'mdm.report' has no attribute {name!r}")
