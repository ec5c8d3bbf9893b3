"""Run a plan: skip runs whose record says done, train the rest (resuming killed ones), write one record each.

    results/runs/<bench>/<task>/<method>/seed<k>/record.json   (atomic: temp file + os.replace; the tiny preset's)
    results/runs/<bench>@<preset>/<task>/<method>/seed<k>/record.json   (any other preset: mdm.bench.spec.records_root)

A record holds the run config, seed, code version (git commit + dirty flag), hardware, wall time, tokens,
forward/backward passes, final metrics, and status `done` or `failed` with the reason. A failed run does not
stop the others; rerunning retries it (and resumes from its last checkpoint). A record is done only for the preset
and configuration that wrote it (`stale_of`): a folder holding another's is refused, never skipped as done.

Ctrl-C (SIGINT) or SIGTERM: no further run starts, the running ones stop at once and are recorded `interrupted`
(whatever error the signal caused on its way out), and `run_plan` returns; a rerun resumes them.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from mdm.bench.dry_run import estimate
from mdm.bench.memory import read_launch
from mdm.bench.records import record_status, stale_of
from mdm.bench.spec import PlannedRun, Spec
from mdm.cache import writable_cache
from mdm.errors import ConfigError
from mdm.eval.api import evaluate_run
from mdm.eval.launch import free_device_memory, launched_eval
from mdm.io import atomic_write_json, atomic_write_text, read_json
from mdm.provenance import code_version, hardware
from mdm.train.trainer import RESULT, set_aside, train_run

DEEPSPEED_MISSING = ("DeepSpeed is not installed: pip install 'mdm[deepspeed]' (make setup GPU=1 does), or launch "
                     "with benchmarks/accelerate/fsdp.yaml")


def require_deepspeed(where: str) -> None:
    """One ConfigError line, before any compute, when a DeepSpeed launch meets an environment without it."""
    try:
        # deferred: deepspeed is optional (only a ZeRO-2 launch needs it)
        import deepspeed  # noqa: F401
    except ImportError:
        raise ConfigError(where, DEEPSPEED_MISSING) from None


def evaluate_accuracy(run_dir: Path, settings: dict | None, launch=None) -> dict | None:
    """Decode + score through mdm.eval.api.evaluate_run (a task plugin's own `evaluate` hook where it has one),
    which adds `eval.<task>` and `metrics.score` to the run's record.json in place. None when skipped (no accuracy
    settings). With a launch config: its own launched job over all its processes (mdm.eval.launch), so no GPU
    idles and this process never holds GPU memory; in process, the CUDA cache is emptied afterwards."""
    if settings is None:
        return None
    if launch is not None:
        return launched_eval(run_dir, settings, launch)
    try:
        return evaluate_run(run_dir, settings)
    finally:
        free_device_memory()


def _launch_train(run: PlannedRun, launch) -> dict:
    """Train through `accelerate launch` (multi-GPU presets): the config file travels in the run dir."""
    import yaml  # deferred: yaml, only to write a launched run's config

    cfg_path = run.run_dir / "run.yaml"
    run.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
    proc = subprocess.run(launch_command(launch, cfg_path))
    result = read_json(run.run_dir / RESULT)
    if result is None:
        raise RuntimeError(f"accelerate launch exited with code {proc.returncode} before writing {RESULT}")
    return result


def launch_command(launch, cfg_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launch.config_file]
    if launch.num_processes:
        cmd += ["--num_processes", str(launch.num_processes)]
    if os.environ.get("MDM_LAUNCH_PORT"):  # parallel launches (--jobs): each its own GPUs and rendezvous port
        cmd += ["--main_process_port", os.environ["MDM_LAUNCH_PORT"]]
    cmd += getattr(launch, "args", [])  # a multi-node SLURM job: machine rank, main address, port (executors/job.py)
    return cmd + ["-m", "mdm.cli", "train", str(cfg_path)]


# the first SIGINT / SIGTERM this process received; `raise`: unwind what runs (a worker between runs only
# takes note); `event`: the main process's stop, shared with its workers
STOP: dict = {"signal": None, "raise": True, "event": None}


def _on_signal(signum, frame) -> None:
    """The first signal unwinds the running run (KeyboardInterrupt); later ones are ignored so that the
    record of the interrupted run is written in peace."""
    if STOP["signal"] is None:
        STOP["signal"] = signal.Signals(signum).name
        if STOP["raise"]:
            raise KeyboardInterrupt


def _catch_signals(keep_ignored: bool = False, ignored=()) -> dict:
    """Our handler for SIGINT and SIGTERM (`keep_ignored`: not for a signal ignored by the caller, e.g. SIGINT of a
    shell's background job; `ignored`: signals to leave ignored whatever); returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return {}
    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if s not in ignored
               and not (keep_ignored and signal.getsignal(s) == signal.SIG_IGN)]
    return {s: signal.signal(s, _on_signal) for s in signals}


def execute(run: PlannedRun, version: dict, launch=None, threads: int | None = None) -> dict:
    """Train + evaluate one run and write its record. Never raises for a failed run."""
    if threads:  # parallel jobs share the CPU: at most `threads` each, whatever the preset says
        import torch  # deferred: torch, only to cap the threads of parallel jobs

        torch.set_num_threads(threads)
        run.config.training.threads = min(run.config.training.threads or threads, threads)
    started = time.perf_counter()
    record = {
        "benchmark": run.bench, "preset": run.preset, "task": run.task, "method": run.method,
        "model_family": run.family, "seed": run.seed, "status": "failed", "reason": "",
        "config": run.config.model_dump(mode="json"), "code_version": version, "hardware": hardware(),
        "run_dir": str(run.run_dir), "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        result = _launch_train(run, launch) if launch else train_run(run.config)
        record.update({k: result.get(k) for k in ("steps", "tokens_seen", "passes", "token_passes", "num_processes",
                                                  "n_train", "n_heldout", "dropped", "model_params", "resumed_from")})
        record["tokens"] = result.get("tokens_seen")
        record["train_wall_time_s"] = result.get("wall_time_s")
        record["metrics"] = dict(result.get("metrics") or {})
        if result["status"] != "done":
            record["reason"] = result["reason"]
        else:
            record["status"] = "evaluating"  # not done until evaluated: a kill here re-evaluates on rerun
            atomic_write_json(run.record_path, record)
            eval_start = time.perf_counter()
            if evaluate_accuracy(run.run_dir, run.config.eval.accuracy, launch) is not None:
                evaluated = read_json(run.record_path) or {}
                record["eval"] = evaluated.get("eval")
                record["metrics"] = {**record["metrics"], **(evaluated.get("metrics") or {})}
            record["eval_wall_time_s"] = round(time.perf_counter() - eval_start, 3)
            record["status"] = "done"
    except BaseException as e:  # noqa: BLE001  (one failed run must not stop the others)
        if STOP["signal"] is not None or isinstance(e, KeyboardInterrupt):  # not the run's fault, whatever e is
            record["status"] = "interrupted"
            record["reason"] = f"interrupted by {STOP['signal'] or 'SIGINT'}; a rerun resumes from the last checkpoint"
        else:
            record["reason"] = (str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}").splitlines()[0]
            run.run_dir.mkdir(parents=True, exist_ok=True)
            (run.run_dir / "error.log").write_text(traceback.format_exc())
    # training time over all attempts (a resumed run adds its segments) + this attempt's evaluation
    train_s = record.get("train_wall_time_s")
    record["wall_time_s"] = round(train_s + record.get("eval_wall_time_s", 0.0), 3) if train_s is not None else \
        round(time.perf_counter() - started, 3)
    record["attempt_wall_time_s"] = round(time.perf_counter() - started, 3)
    record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(run.record_path, record)
    return record


def _worker(args):
    run, version, launch, threads = args
    STOP["raise"] = True
    try:
        if STOP["signal"] or STOP["event"].is_set():  # queued before the stop: not started
            return run.index, None
        return run.index, execute(run, version, launch, threads)
    finally:
        STOP["raise"] = False


def _worker_init(event, ignored=(), slots=None) -> None:
    """A worker catches what the main process catches: a signal the main process ignores (SIGINT of a background
    job) is ignored by its workers too, so it never stops half of a benchmark. `slots` (launched runs with --jobs):
    a queue of (CUDA_VISIBLE_DEVICES, port); each worker takes one, so parallel launches never share a GPU."""
    STOP.update({"raise": False, "event": event})
    if slots is not None:
        devices, port = slots.get()
        os.environ["CUDA_VISIBLE_DEVICES"], os.environ["MDM_LAUNCH_PORT"] = devices, str(port)
    _catch_signals(ignored=ignored)


def set_aside_stale(runs: list[PlannedRun], rerun_stale: bool, echo=print) -> None:
    """A spec edited after some runs finished: say so before any compute, or (rerun_stale) move those folders
    aside as `<folder>.stale-N` (nothing is deleted) so the runs start again with the current configuration."""
    stale = [(r, why) for r in runs if (why := stale_of(r))]
    if not stale:
        return
    if not rerun_stale:
        run, why = stale[0]
        raise ConfigError(str(run.run_dir), f"{len(stale)} run folder(s) hold runs of another configuration (first "
                          f"difference: {why}); pass --rerun-stale to move them aside (kept as <folder>.stale-N) and "
                          "rerun them, or use another --results")
    for run, why in stale:
        echo(f"{run.key}: another configuration ({why}); moved to {set_aside(run.run_dir).name}")


def run_plan(spec: Spec, runs: list[PlannedRun], jobs: int = 1, echo=print, rerun_stale: bool = False) -> dict:
    preset = spec.bench.presets[runs[0].preset] if runs else None
    if preset is not None and preset.launch is not None:  # a launch the environment cannot do fails before compute
        if read_launch(preset.launch.config_file).backend == "zero2":
            require_deepspeed(f"{spec.path}: presets.{runs[0].preset}.launch.config_file")
    set_aside_stale(runs, rerun_stale, echo)
    todo = [r for r in runs if record_status(r) != "done"]
    for cache_dir in sorted({r.config.model.cache_dir or "" for r in todo}):  # every run would fail alike
        writable_cache(cache_dir or None)
    skipped = len(runs) - len(todo)
    echo(f"{spec.name}: {len(runs)} runs selected, {skipped} already done, {len(todo)} to run")
    version = code_version()
    launch = preset.launch if preset else None
    counts = {"done": 0, "failed": 0, "interrupted": 0, "skipped": skipped}

    def report(i, run, rec):
        counts[rec["status"]] += 1
        tail = (f"{rec['wall_time_s']:.1f}s" + (f", held-out {rec['metrics']['heldout_loss']:.4f}"
                if rec.get("metrics", {}).get("heldout_loss") is not None else "")) if rec["status"] == "done" \
            else f"{rec['status'].upper()}: {rec['reason']}"
        echo(f"[{i}/{len(todo)}] {run.key} ({run.family}): {tail}")

    STOP["signal"] = None
    slots = None
    if launch is not None and jobs > 1 and len(todo) > 1:  # before any compute: each launch its own GPUs
        from mdm.bench.preflight import gpu_slots  # deferred: torch.cuda, only for launched runs

        slots = gpu_slots(read_launch(launch.config_file, launch.num_processes).processes, jobs)
    previous = _catch_signals(keep_ignored=True)
    try:
        if jobs <= 1 or len(todo) <= 1:
            for i, run in enumerate(todo, 1):
                report(i, run, execute(run, version, launch))
                if STOP["signal"]:
                    break
        else:
            _run_parallel(schedule(todo, preset), jobs, version, launch, report, slots)
    except KeyboardInterrupt:
        STOP["signal"] = STOP["signal"] or "SIGINT"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if STOP["signal"]:
        counts["stopped_by"] = STOP["signal"]
        return counts
    echo(f"{spec.name}: {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped (already done)")
    return counts


def schedule(todo: list[PlannedRun], preset) -> list[PlannedRun]:
    """The order parallel workers take runs in: first each task's costliest run (so the tasks' cached bases are
    built side by side), then the cheapest task's runs, so the worker that built the quicker base does not wait on
    another's, each task longest first, so no long run is left for the end while the other workers idle. Results do
    not depend on the order: every run is keyed."""
    if preset is None:
        return todo
    cost = {r.index: estimate(r, preset)["token_passes"] for r in todo}
    ordered = sorted(todo, key=lambda r: (-cost[r.index], r.index))
    first = list({r.task: r for r in reversed(ordered)}.values())[::-1]  # each task's costliest run
    first.sort(key=lambda r: (-cost[r.index], r.index))
    rank = {r.task: -i for i, r in enumerate(first)}  # the task of the cheapest costliest run first
    chosen = {r.index for r in first}
    return first + sorted((r for r in ordered if r.index not in chosen), key=lambda r: rank[r.task])


def _run_parallel(todo: list[PlannedRun], jobs: int, version: dict, launch, report, slots=None) -> None:
    """`jobs` spawned workers; on a signal, queued runs are cancelled and running ones told to stop (SIGTERM),
    and their `interrupted` records are awaited (each worker writes its own)."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    by_index = {r.index: r for r in todo}
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    caught = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    ignored = tuple(s for s, handler in caught.items() if handler == signal.SIG_IGN)
    try:  # the workers start with the signals ignored (inherited) until _worker_init: none dies starting up
        queue = None
        if slots:
            queue = ctx.Queue()
            for slot in slots:
                queue.put(slot)
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                   initargs=(stop, ignored, queue))
        futures = [pool.submit(_worker, (r, version, launch, threads)) for r in todo]
    finally:
        for sig, handler in caught.items():
            signal.signal(sig, handler)
    done, reported = 0, set()
    try:
        for fut in as_completed(futures):
            index, rec = fut.result()
            reported.add(index)
            if rec is not None:  # None: a worker signalled on its own did not start it
                done += 1
                report(done, by_index[index], rec)
    except KeyboardInterrupt:
        stop.set()
        workers = list((pool._processes or {}).values())  # before shutdown, which forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:  # a signal to the main process alone reaches them too
            if proc.is_alive():
                proc.terminate()
        deadline = time.time() + 30
        for fut in futures:  # the running runs' records, written by their workers
            try:
                index, rec = fut.result(timeout=max(0.1, deadline - time.time()))
            except FutureTimeout:  # a worker that does not stop: no record, a rerun resumes its checkpoint
                for proc in workers:
                    if proc.is_alive():
                        proc.kill()
                continue
            except BaseException:  # noqa: BLE001  (cancelled, or a worker that died starting up: no record)
                continue
            if rec is None or index in reported:  # not started, or already reported
                continue
            done += 1
            report(done, by_index[index], rec)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
