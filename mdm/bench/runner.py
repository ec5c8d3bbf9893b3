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

from mdm.bench import eval_cost, memory, plan_cost
from mdm.bench.estimate import hours, human, model_params
from mdm.bench.lengths import run_lengths
from mdm.bench.memory import read_launch
from mdm.bench.spec import PlannedRun, Spec
from mdm.cache import writable_cache
from mdm.errors import ConfigError
from mdm.eval.api import evaluate_run
from mdm.eval.launch import free_device_memory, launched_eval
from mdm.io import atomic_write_json, read_json
from mdm.objective import Method
from mdm.provenance import code_version, hardware
from mdm.train import ppots
from mdm.train.trainer import RESULT, set_aside, stale_reason, train_run

CHECKPOINT_WARN_BYTES = 1e12  # --dry-run warns when one run's checkpoints write more than this
DEEPSPEED_MISSING = ("DeepSpeed is not installed: pip install 'mdm[deepspeed]' (make setup GPU=1 does), or launch "
                     "with benchmarks/accelerate/fsdp.yaml")


def require_deepspeed(where: str) -> None:
    """One ConfigError line, before any compute, when a DeepSpeed launch meets an environment without it."""
    try:
        # deferred: deepspeed is optional (only a ZeRO-2 launch needs it)
        import deepspeed  # noqa: F401
    except ImportError:
        raise ConfigError(where, DEEPSPEED_MISSING) from None


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
    cfg_path.write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launch.config_file]
    if launch.num_processes:
        cmd += ["--num_processes", str(launch.num_processes)]
    if os.environ.get("MDM_LAUNCH_PORT"):  # parallel launches (--jobs): each its own GPUs and rendezvous port
        cmd += ["--main_process_port", os.environ["MDM_LAUNCH_PORT"]]
    cmd += ["-m", "mdm.cli", "train", str(cfg_path)]
    proc = subprocess.run(cmd)
    result = read_json(run.run_dir / RESULT)
    if result is None:
        raise RuntimeError(f"accelerate launch exited with code {proc.returncode} before writing {RESULT}")
    return result


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


# ---------------------------------------------------------------- --dry-run


def estimate(run: PlannedRun, preset) -> dict:
    """Sequences, forward/backward token passes, FLOPs and hours of one run (no model is loaded)."""
    cfg = run.config
    ts = preset.tasks[run.task]
    avg = (ts.avg_tokens if ts and ts.avg_tokens else None) or cfg.data.max_length / 2
    if cfg.data.pad_to and run.arm is None:  # an MDM row of a fixed canvas is that long, whatever its text
        avg = cfg.data.pad_to
    n = cfg.data.n_train or 1000
    n_fit = n - (max(1, round(cfg.data.heldout_fraction * n)) if cfg.data.heldout_fraction > 0 else 0)
    t = cfg.training
    steps = t.max_steps or max(1, round(t.epochs * -(-n_fit // t.global_batch_size)))
    sequences = min(steps * t.global_batch_size, n_fit * t.epochs) if t.max_steps is None else steps * t.global_batch_size
    cost, pilot = 1.0, 0.0
    if run.arm is None:
        method = Method.build(cfg.method)
        cost = method.cost
        if ppots.needs_fit(method):
            pilot = cfg.ppots_pilot.a * cfg.ppots_pilot.b * cfg.ppots_pilot.c * avg
    params = model_params(cfg.model, run.arm.params if run.arm else preset.params)
    token_passes = sequences * avg * cost
    flops = None if params is None else 6 * params * token_passes + 2 * params * pilot
    # a forward-only pilot token costs about a third of a forward/backward token pass
    return {"steps": steps, "sequences": sequences, "token_passes": token_passes, "pilot_tokens": pilot,
            "params": params, "flops": flops, "hours": hours(token_passes + pilot / 3, flops, preset.hardware),
            "avg_tokens": avg, "cost": cost}


def duration(h: float | None) -> str:
    if h is None:
        return "?"
    return f"{h * 3600:.0f}s" if h < 1 / 60 else f"{h * 60:.1f}min" if h < 1 else f"{h:.1f}h"


def print_plan(spec: Spec, preset_name: str, all_runs: list[PlannedRun], runs: list[PlannedRun], echo=print,
               launch_file: str | None = None) -> dict:
    preset = spec.bench.presets[preset_name]
    hw = preset.hardware
    hw_text = "no hardware given (time not estimated)" if hw is None else (
        f"{hw.name} at {hw.tokens_per_s:g} token passes/s (measured)" if hw.tokens_per_s else
        f"{hw.count} x {hw.name} at an assumed MFU of {hw.mfu:.0%}")
    echo(f"{spec.name} (preset {preset_name}): {len(runs)} of {len(all_runs)} planned runs; {hw_text}")
    echo(f"  {'#':>3}  {'task':<12} {'method':<24} {'family':<26} {'seed':>6}  {'status':<8} {'steps':>6} "
         f"{'passes/seq':>10} {'token passes':>13} {'FLOP':>9} {'time':>8}")
    total = {"runs": 0, "token_passes": 0.0, "flops": 0.0, "hours": 0.0, "unknown": 0}
    stale = []
    for r in runs:
        e = estimate(r, preset)
        status = record_status(r)
        if status == "stale":
            stale.append(r)
        echo(f"  {r.index + 1:>3}  {r.task:<12} {r.method_dir:<24} {r.family:<26} {r.seed:>6}  {status:<8} "
             f"{e['steps']:>6} {e['cost']:>10g} {human(e['token_passes']):>13} {human(e['flops']):>9} "
             f"{duration(e['hours']):>8}")
        if status == "done":
            continue
        total["runs"] += 1
        total["token_passes"] += e["token_passes"]
        total["flops"] += e["flops"] or 0.0
        total["hours"] += e["hours"] or 0.0
        total["unknown"] += e["hours"] is None
    if stale:
        echo(f"  stale: {len(stale)} run folder(s) hold another preset's or configuration's run, not done (first: "
             f"{stale[0].run_dir}: {stale_of(stale[0])}); mdm bench refuses them: --rerun-stale moves them aside")
    bases = sorted({(r.task, r.config.model.family) for r in runs if r.config.model.base == "auto"})
    if bases:
        echo(f"  + {len(bases)} tiny base model(s), built once and cached: " + ", ".join(f"{t}/{f}" for t, f in bases))
    if hw is None and total["runs"]:  # no time at all, rather than "0s (+ N runs of unknown cost)"
        time_text = ("time unknown: the preset has no hardware section (give hardware: {name, tokens_per_s} "
                     "measured, or {name, count, mfu}) to estimate it")
    else:
        unknown = f" (+ {total['unknown']} runs of unknown cost)" if total["unknown"] else ""
        flops_only = " (6N FLOPs per token pass: training alone; the cost plan below splits a run's time)" \
            if hw is not None and not hw.tokens_per_s and (launch_file or preset.launch) else ""
        time_text = f"{duration(total['hours'])}{unknown} on {hw_text}{flops_only}"
    echo(f"to run: {total['runs']} runs, {human(total['token_passes'])} forward/backward token passes, "
         f"{human(total['flops'])}FLOP, {time_text}")
    print_gpu_hours(preset, runs, total, echo)
    print_memory(preset, runs, launch_file, echo)
    plan_cost.print_cost_plan(preset, runs, {r.index: estimate(r, preset) for r in runs}, launch_file, echo)
    return total


def print_gpu_hours(preset, runs: list[PlannedRun], total: dict, echo=print) -> None:
    """GPU-hours of training and of evaluation, separately (`mdm.bench.eval_cost`), for GPU presets."""
    hw = preset.hardware
    if hw is None or hw.tokens_per_s:
        return
    todo = [r for r in runs if record_status(r) != "done"]
    ev = eval_cost.plan_eval_cost(todo, preset)
    train_h = total["hours"] * hw.count
    echo(f"GPU-hours ({hw.name}, MFU {hw.mfu:.0%}): training {train_h:.1f}, evaluation {ev['hours']:.1f} "
         f"({ev['prompts']:,} prompts decoded at up to {ev['forwards_per_prompt']} forwards each + held-out "
         f"likelihood; {ev['flops'] / 1e18:.1f} EFLOP); total {train_h + ev['hours']:.1f}")


def print_memory(preset, runs: list[PlannedRun], launch_file: str | None, echo=print) -> None:
    """Per-GPU memory by component of each model of the plan under the launch config (mdm.bench.memory), the
    fit on the preset's GPU, and the checkpoint disk per run. Nothing without a launch config (`--launch`)."""
    path = launch_file or (preset.launch.config_file if preset.launch else None)
    one_gpu = preset.hardware is not None and preset.hardware.count == 1 and not preset.hardware.tokens_per_s
    if (path is None and not one_gpu) or not runs:
        return
    # no launch config on one GPU (the small preset): one process
    launch = memory.read_launch(path, None if launch_file else preset.launch.num_processes) if path else \
        memory.LaunchPlan("single", 1)
    capacity = memory.device_gib(preset.hardware)
    gpu = f"{preset.hardware.name}, {capacity:.1f} GiB" if capacity else "GPU memory unknown (hardware.memory_gib)"
    echo(f"per-GPU memory ({launch.title}; {gpu}; worst case: a micro-batch padded to the task's longest row, every "
         "token masked):")
    groups: dict[str, list[PlannedRun]] = {}
    for r in runs:
        groups.setdefault(r.config.model.source, []).append(r)
    warnings = []
    for source, group in groups.items():
        arch = memory.arch_of(group[0].config.model)
        if arch is None:
            echo(f"  {source}: shape unknown (not a known hub id); memory not estimated")
            continue
        columns: dict[tuple, memory.Column] = {}
        for r in group:
            views = 1 if r.arm is not None or r.config.training.separate_views else \
                memory.views_of(Method.build(r.config.method).cost)
            longest = run_lengths(r.config.data, r.config.model).longest
            c = memory.Column(r.task, longest, r.config.training.micro_batch_size, views)
            columns.setdefault((c.task, c.views), c)
        t = group[0].config.training
        echo(f"  {source} ({arch.params / 1e9:.2f}B params, {arch.layers} layers, hidden {arch.hidden}, mlp "
             f"{arch.intermediate}, vocab {arch.vocab}); micro-batch x longest row x views (x2: MIRROR's second "
             f"view); micro-batch: " + ", ".join(f"{c.label} {c.micro_batch}" for c in columns.values()))
        lines, warn = memory.memory_table(arch, launch, list(columns.values()), t.gradient_checkpointing, capacity,
                                          preset.hardware.fit_gib if preset.hardware else ())
        for line in lines:
            echo(line)
        warnings += [f"{w} with {source}" for w in warn]
        if t.checkpoint_minutes and not t.checkpoint_every:
            echo(f"    checkpoints (model + optimizer, {memory.checkpoint_bytes(arch.params, launch) / 1e9:.0f} GB each; "
                 f"every {t.checkpoint_minutes:g} min of training, keep {t.keep_checkpoints}): per run in the cost plan")
        if isinstance(t.checkpoint_every, int):  # "auto": decided when the run starts
            disk = {r.task: memory.checkpoint_disk(arch.params, launch, estimate(r, preset)["steps"],
                                                   t.checkpoint_every, t.keep_checkpoints) for r in group}
            size = next(iter(disk.values()))["size"]
            echo(f"    checkpoints (model + optimizer, {size / 1e9:.0f} GB each; every {t.checkpoint_every} steps, "
                 f"keep {t.keep_checkpoints}): " + ", ".join(
                     f"{task} {d['count']} written ({d['written'] / 1e9:.0f} GB), disk {d['peak'] / 1e9:.0f} GB"
                     for task, d in disk.items()))
            if t.save_model_every:
                snaps = {r.task: memory.snapshot_disk(arch.params, launch, estimate(r, preset)["steps"],
                                                      t.save_model_every, t.keep_models) for r in group}
                echo(f"    model snapshots (weights only, {next(iter(snaps.values()))['size'] / 1e9:.0f} GB each; every "
                     f"{t.save_model_every} steps, keep {t.keep_models or 'all'}): " + ", ".join(
                         f"{task} {d['count']} written, disk {d['peak'] / 1e9:.0f} GB" for task, d in snaps.items()))
            heavy = [task for task, d in disk.items() if d["written"] > CHECKPOINT_WARN_BYTES]
            if heavy:
                warnings.append(f"WARNING: checkpoints write over {CHECKPOINT_WARN_BYTES / 1e12:g} TB per run for "
                                f"{', '.join(heavy)} with {source}; raise training.checkpoint_every")
    for w in warnings:
        echo(w)
