"""Reports: leaderboards, synergy-vs-additivity tables and plots, from run records or per-seed CSVs."""

from __future__ import annotations

from mdm.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"leaderboard": "tables", "load_scores": "records", "synergy": "tables"})
