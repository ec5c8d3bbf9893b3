"""`mdm bench --dry-run`: the plan table (steps, token passes, FLOPs, time per run), then for GPU presets the per-GPU
memory by component (mdm.bench.memory) and the cost plan (mdm.bench.plan_cost). No model is loaded."""

from __future__ import annotations

from mdm.bench import eval_cost, memory, plan_cost
from mdm.bench.estimate import hours, human, model_params
from mdm.bench.lengths import run_lengths
from mdm.bench.records import record_status, stale_of
from mdm.bench.spec import PlannedRun, Spec
from mdm.objective import Method
from mdm.train import ppots

CHECKPOINT_WARN_BYTES = 1e12  # --dry-run warns when one run's checkpoints write more than this


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
    estimates = {r.index: estimate(r, preset) for r in runs}
    stale = []
    for r in runs:
        e = estimates[r.index]
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
    if plan_cost.launch_of(preset, launch_file) is None:  # else the cost plan below splits the hours itself
        print_gpu_hours(preset, runs, total, echo)
    print_memory(preset, runs, estimates, launch_file, echo)
    plan_cost.print_cost_plan(preset, runs, estimates, launch_file, echo)
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


def print_memory(preset, runs: list[PlannedRun], estimates: dict, launch_file: str | None, echo=print) -> None:
    """Per-GPU memory by component of each model of the plan under the launch config (mdm.bench.memory), the
    fit on the preset's GPU, and the checkpoint disk per run (`estimates`: run.index -> `estimate`). Nothing without
    a launch config (`--launch`)."""
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
            disk = {r.task: memory.checkpoint_disk(arch.params, launch, estimates[r.index]["steps"],
                                                   t.checkpoint_every, t.keep_checkpoints) for r in group}
            size = next(iter(disk.values()))["size"]
            echo(f"    checkpoints (model + optimizer, {size / 1e9:.0f} GB each; every {t.checkpoint_every} steps, "
                 f"keep {t.keep_checkpoints}): " + ", ".join(
                     f"{task} {d['count']} written ({d['written'] / 1e9:.0f} GB), disk {d['peak'] / 1e9:.0f} GB"
                     for task, d in disk.items()))
            if t.save_model_every:
                snaps = {r.task: memory.snapshot_disk(arch.params, launch, estimates[r.index]["steps"],
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
