"""`mdm bench SPEC --executor slurm`: submit every run that is not done and not queued as a SLURM job (submitit).

    <records>/.slurm/jobs.json     run folder -> {job_id, job_name, submitted_at, log} of its last submission
    <records>/.slurm/submit.lock   one submitter at a time (filelock: flock on a shared filesystem)
    <records>/.slurm/logs/<job>/   submitit's pickles and each job's log
(<records>: the preset's records folder, `<results>/<bench>` or `<results>/<bench>@<preset>`.)

The runs of one command go out as one job array (one task per run, `array_parallelism` at once); each task runs
`mdm.bench.executors.job.RunJob`, the same run unit as the local executor (`mdm.bench.runner.execute`), and writes
its record into the same folder as a local run would. A run is skipped when its record says done, or when its last
job is still in `squeue` under the job name it was submitted with (a job id reused after the controller restarted
from a clean state belongs to another job). The check and the submission happen under the lock, so two submitters
started at once submit each run once. No accounting (slurmdbd) is needed: states come from squeue and the records.

Resources: one task per node (it runs `accelerate launch` for the preset's launch config, or trains in-process),
`nodes` from the slurm section, GPUs per node = hardware.count / nodes where the preset has a launch config (0
otherwise), and the section's partition, account, qos, constraint, time, CPUs and memory; the warning signal
`--signal=USR1@120` (checkpoint + requeue: job.py), `--requeue`, and the submitter's working directory.

Shared state on a cluster: the results folder, $MDM_CACHE (bases, P-POTS pilots, tokenizers) and the HF cache must be
on a filesystem every node mounts at the same path. What mdm relies on there:
- exclusive locks between nodes: mdm.io.file_lock / folder_lock take `flock` (filelock's UnixFileLock). Linux NFS
  clients (v3 with NLM, v4) turn flock into POSIX byte-range locks that hold across clients; GPFS / Spectrum Scale
  and CephFS lock across nodes; Lustre only when mounted with `-o flock` (`localflock` locks within one node only);
  BeeGFS with tuneUseGlobalFileLocks=true. A base, pilot or record is then built by one job while the others wait;
- atomic publication: files and folders are written under a temporary name and renamed (os.replace) within one
  folder, which is atomic on POSIX filesystems, NFS included; with NFS's close-to-open consistency a job that
  opens a record after its writer closed and renamed it reads all of it.
Verified here on one node only (the CI cluster); the cross-node properties are the filesystems' documented ones.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import uuid
from pathlib import Path

from mdm.bench.executors.settings import SlurmSettings, slurm_settings
from mdm.bench.spec import PlannedRun, Spec, records_root
from mdm.errors import ConfigError
from mdm.io import atomic_write_json, file_lock, read_json

# squeue's states of a job that is not over: the run is queued or running, so it is not submitted again
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
RUNNING = {"CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"}


def slurm_dir(results: str | Path, bench: str, preset: str) -> Path:
    """`.slurm/` in the preset's records folder (`<results>/<bench>` or `<results>/<bench>@<preset>`)."""
    return records_root(results, bench, preset) / ".slurm"


def squeue() -> dict[str, tuple[str, str]]:
    """job id (array tasks as <array>_<task>) -> (state, job name) of every job SLURM has not finished."""
    cmd = ["squeue", "--noheader", "--array", "--format=%i|%T|%j"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError("squeue", f"cannot read the SLURM queue ({e}); is this a SLURM login node?") from None
    if out.returncode != 0:
        why = (out.stderr.strip() or f"exit code {out.returncode}").splitlines()[-1]
        raise ConfigError("squeue", f"cannot read the SLURM queue: {why}")
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, state, name = (line.split("|", 2) + ["", ""])[:3]
        jobs[job_id.strip()] = (state.strip(), name.strip())
    return jobs


def live_state(job: dict | None, queue: dict) -> str | None:
    """'queued' or 'running' when the run's last job is still in the queue under its name, else None."""
    if not job or job.get("job_id") not in queue:
        return None
    state, name = queue[job["job_id"]]
    if name != job.get("job_name"):
        return None
    return "queued" if state in QUEUED else "running" if state in RUNNING else None


def time_limit(settings: SlurmSettings, runs: list[PlannedRun], preset) -> str | int:
    """The section's time, else twice the longest run's estimate plus 30 minutes (24 h when it has no estimate)."""
    if settings.time is not None:
        return settings.time
    from mdm.bench.dry_run import estimate  # deferred: imports torch; only where no time limit is given

    hours = [estimate(r, preset)["hours"] for r in runs]
    if not hours or any(h is None for h in hours):
        return 24 * 60
    return math.ceil(2 * max(hours) * 60 + 30)


def sbatch_parameters(settings: SlurmSettings, preset, runs: list[PlannedRun], name: str, cwd: str) -> dict:
    """submitit.SlurmExecutor parameters of one submission (the sbatch options of every run in it)."""
    gpus = settings.gpus_per_node
    if gpus is None:  # the preset's GPUs, spread over the nodes; none for a CPU preset or one without a launch
        hw = preset.hardware
        cpu = hw is not None and hw.name.lower().startswith("cpu")
        gpus = max(1, (hw.count if hw else 1) // settings.nodes) if preset.launch is not None and not cpu else 0
    params = {
        "job_name": name, "nodes": settings.nodes, "ntasks_per_node": 1, "time": time_limit(settings, runs, preset),
        "stderr_to_stdout": True, "signal_delay_s": settings.signal_delay_s,
        "additional_parameters": {"signal": f"{settings.signal}@{settings.signal_delay_s}", "requeue": True,
                                  "chdir": cwd, **settings.sbatch},
    }
    for key in ("partition", "account", "qos", "constraint", "cpus_per_task", "array_parallelism"):
        if getattr(settings, key) is not None:
            params[key] = getattr(settings, key)
    if gpus:
        params["gpus_per_node"] = gpus
    if settings.mem_gb is not None:
        params["mem"] = f"{int(settings.mem_gb)}GB" if settings.mem_gb == int(settings.mem_gb) else \
            f"{int(settings.mem_gb * 1024)}MB"
    if settings.setup:
        params["setup"] = list(settings.setup)
    return params


def submit(todo: list[PlannedRun], settings: SlurmSettings, preset, folder: Path, name: str, version: dict) -> list[str]:
    """One job array (a single job for one run); returns the job ids in the order of `todo`."""
    import submitit  # deferred: submitit, only to submit

    from mdm.bench.executors.job import RunJob  # deferred: the job body imports the trainer (torch)

    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=0)
    executor.update_parameters(**sbatch_parameters(settings, preset, todo, name, os.getcwd()))
    launch = preset.launch
    try:
        with executor.batch():
            jobs = [executor.submit(RunJob(run, version, launch, settings.signal, settings.nodes,
                                           settings.max_requeues)) for run in todo]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise ConfigError("sbatch", f"refused the submission: {lines[-1] if lines else e} (sbatch options: the "
                          "spec's slurm: section and --slurm)") from None
    return [job.job_id for job in jobs]


def run_slurm(spec: Spec, runs: list[PlannedRun], args, echo=print) -> None:
    """The `slurm` executor: submit, print one line per submitted run, and return (watch with `--status`)."""
    # deferred: the runner imports the trainer (torch), after the spec's and the options' errors
    from mdm.bench.runner import record_status, set_aside_stale
    from mdm.cache import writable_cache
    from mdm.provenance import code_version

    settings = slurm_settings(spec.bench.slurm, getattr(args, "slurm", None))
    preset = spec.bench.presets[args.preset]
    if preset.launch is None and settings.nodes > 1:
        raise ConfigError("--slurm nodes", f"{settings.nodes} nodes need a launch config (presets.{args.preset}.launch); "
                          "a run without one trains in one process")
    set_aside_stale(runs, getattr(args, "rerun_stale", False), echo)
    root = slurm_dir(args.results, spec.name, args.preset)
    with file_lock(root / "submit.lock"):
        jobs = read_json(root / "jobs.json") or {}
        queue = squeue()
        todo, done, live = [], 0, 0
        for run in runs:
            if record_status(run) == "done":  # of this preset and configuration (a stale folder is refused above)
                done += 1
            elif live_state(jobs.get(str(run.run_dir)), queue):
                live += 1
            else:
                todo.append(run)
        echo(f"{spec.name}: {len(runs)} runs selected, {done} already done, {live} queued or running, "
             f"{len(todo)} to submit")
        if not todo:
            return
        for cache_dir in sorted({r.config.model.cache_dir or "" for r in todo}):  # every run would fail alike
            writable_cache(cache_dir or None)
        name = f"mdm.{spec.name}.{uuid.uuid4().hex[:8]}"
        ids = submit(todo, settings, preset, root / "logs", name, code_version())
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        for run, job_id in zip(todo, ids):
            jobs[str(run.run_dir)] = {"job_id": job_id, "job_name": name, "submitted_at": now,
                                      "log": str(root / "logs" / job_id / f"{job_id}_0_log.out")}
        atomic_write_json(root / "jobs.json", jobs)
    for run, job_id in zip(todo, ids):
        echo(f"submitted {run.key} ({run.family}): job {job_id}")
    echo(f"{spec.name}: {len(ids)} runs submitted as {name}; watch them: the same command with --status instead "
         "of --executor slurm")
