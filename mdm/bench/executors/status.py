"""`mdm bench SPEC --status`: each selected run's state, its SLURM job and the totals; submits and runs nothing.

A run is `done` when its record says so; `queued` or `running` while its last SLURM job is in squeue under the name
it was submitted with (a requeued job is `queued` again); else what its record says: `failed` or `interrupted`
(a record left `evaluating` was interrupted too); a job that left the queue without writing a record is `lost`
(its log tells why); `stale` when the folder holds another preset's or configuration's run; `not started` when
nothing ran. squeue is asked only when some run has a job.
"""

from __future__ import annotations

from mdm.bench.executors.slurm import live_state, slurm_dir, squeue
from mdm.bench.records import stale_of
from mdm.bench.spec import PlannedRun, Spec
from mdm.errors import ConfigError
from mdm.io import read_json

STATES = ("done", "running", "queued", "failed", "interrupted", "lost", "unknown", "stale", "not started")


def run_state(run: PlannedRun, job: dict | None, queue: dict | None) -> tuple[str, str]:
    """(state, note) of one run; `queue` None: squeue could not be read."""
    rec = read_json(run.record_path) or {}
    status = rec.get("status")
    why = stale_of(run, rec) if rec else None
    if why:
        return "stale", f"holds another run ({why}); --rerun-stale moves it aside"
    if status == "done":
        score = (rec.get("metrics") or {}).get("score")
        return "done", (f"score {score:.4f}, " if isinstance(score, (int, float)) else "") + \
            f"{rec.get('wall_time_s', 0):.0f}s"
    if job is not None and queue is None:
        return "unknown", "squeue unavailable"
    live = live_state(job, queue or {})
    if live:
        return live, f"after: {rec['reason']}" if status == "interrupted" else ""
    if status == "failed":
        return "failed", rec.get("reason", "")
    if status in ("interrupted", "evaluating"):
        return "interrupted", rec.get("reason", "interrupted during evaluation")
    if job is not None:
        return "lost", f"job ended without a record; see {job.get('log')}"
    return "not started", ""


def print_status(spec: Spec, preset: str, runs: list[PlannedRun], results: str, echo=print) -> dict:
    jobs = read_json(slurm_dir(results, spec.name, preset) / "jobs.json") or {}
    queue: dict | None = {}
    if any(str(r.run_dir) in jobs for r in runs):
        try:
            queue = squeue()
        except ConfigError as e:
            echo(f"warning: {e}")
            queue = None
    echo(f"{spec.name} (preset {preset}): {len(runs)} runs")
    echo(f"  {'state':<12} {'job':<12} {'task':<12} {'method':<24} {'family':<10} {'seed':>6}  note")
    counts = dict.fromkeys(STATES, 0)
    for r in runs:
        job = jobs.get(str(r.run_dir))
        state, note = run_state(r, job, queue)
        counts[state] += 1
        echo(f"  {state:<12} {(job or {}).get('job_id', '-'):<12} {r.task:<12} {r.method_dir:<24} {r.family:<10} "
             f"{r.seed:>6}  {note}")
    echo("totals: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in STATES[:6]))
    return counts
