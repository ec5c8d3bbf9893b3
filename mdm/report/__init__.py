"""Reports: leaderboards, synergy-vs-additivity tables and plots, from run records or per-seed CSVs."""

from mdm.report.tables import leaderboard, load_scores, synergy

__all__ = ["leaderboard", "load_scores", "synergy"]
