"""A planned run's record as the bench sees it: done, pending, failed, interrupted, or stale (its folder holds another
preset's or configuration's run: never counted done)."""

from __future__ import annotations

from mdm.bench.spec import PlannedRun
from mdm.io import read_json
from mdm.train.trainer import stale_reason


def stale_of(run: PlannedRun, record: dict | None = None) -> str | None:
    """Why the run folder holds another run than `run` (another preset's record, or a run of another
    configuration), else None. Such a folder is never counted done; `mdm bench` refuses it (`set_aside_stale`)."""
    record = read_json(run.record_path) if record is None else record
    if record and record.get("preset", run.preset) != run.preset:
        return f"a record of preset {record['preset']!r}, not {run.preset!r}"
    return stale_reason(run.run_dir, run.config)


def record_status(run: PlannedRun) -> str:
    """pending | done | failed | interrupted | evaluating | stale (another preset's or configuration's run)."""
    rec = read_json(run.record_path)
    if not rec:
        return "pending"
    return "stale" if stale_of(run, rec) else rec.get("status", "?")
